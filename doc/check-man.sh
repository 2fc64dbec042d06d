#!/bin/sh
# Each manual page renders with man -l without a single warning (groff's
# and man's), and says what it must. Skips (77) without man-db.
command -v man >/dev/null || { echo "man is not installed (apt-get install man-db)"; exit 77; }
status=0
for page in "$@"; do
  warnings=$(MANWIDTH=80 man --warnings=all -l "$page" 2>&1 >/dev/null)
  if [ -n "$warnings" ]; then
    echo "$page: $warnings"
    status=1
  fi
  lines=$(MANWIDTH=80 man -l "$page" 2>/dev/null | wc -l)
  [ "$lines" -ge 40 ] || { echo "$page: only $lines lines rendered"; status=1; }
done
exit $status
