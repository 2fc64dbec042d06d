#!/usr/bin/env python3
"""Counts test results from meson's testlog.json files: TAP subtests one by one
(ok / not ok / # SKIP), any other test by its meson result. Prints the totals as
'N passed, N failed, N skipped' and exits 1 when anything failed or nothing ran."""
import json
import re
import sys

passed = failed = skipped = 0
for log in sys.argv[1:]:
    try:
        lines = open(log, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        print(f"count-tests: no test log {log}", file=sys.stderr)
        failed += 1
        continue
    for line in lines:
        if not line.strip():
            continue
        t = json.loads(line)
        result = t.get("result")
        subs = [l for l in (t.get("stdout") or "").splitlines()
                if re.match(r"^(not )?ok\b", l)]
        if subs:
            for s in subs:
                if s.startswith("not ok") and "# TODO" not in s:
                    failed += 1
                elif "# SKIP" in s or "# skip" in s:
                    skipped += 1
                else:
                    passed += 1
            if result not in ("OK", "SKIP", "EXPECTEDFAIL") and not any(s.startswith("not ok") for s in subs):
                failed += 1  # crashed or timed out after its last subtest
        elif result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif result == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or passed == 0 else 0)
