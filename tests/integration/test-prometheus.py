#!/usr/bin/python3
"""The Grafana dashboard against a real Prometheus: the demo line serves
/metrics (inspectd run --http), Debian's Prometheus scrapes it every second,
and every query of contrib/grafana/inspectd.json is run through Prometheus's
HTTP API as Grafana would run it: $instance from the dashboard's own variable
query (label_values(inspectd_model_info, instance)), then each panel's
expression. Each must parse and return data, and the parts rate must be the
demo's 4 parts/s. What a dashboard user sees, short of Grafana's renderer
(not packaged in Debian).

TAP output; skips (the prerequisite missing) without prometheus."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from tap import Tap, free_port

INSPECTD = os.environ.get("INSPECTD", "build/daemon/inspectd")
SRCDIR = os.environ.get("INSP_TEST_SRCDIR", os.path.join(os.path.dirname(__file__), ".."))
DASHBOARD = os.path.join(SRCDIR, "..", "contrib", "grafana", "inspectd.json")
tap = Tap()


def api(port, path, **params):
    url = f"http://127.0.0.1:{port}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # a bad query is a 400 with a JSON body
        return json.load(e)


def dashboard_targets():
    with open(DASHBOARD) as f:
        d = json.load(f)
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    var = [v for v in d["templating"]["list"] if v["name"] == "instance"][0]
    return out, var["query"]


def main():
    prometheus = shutil.which("prometheus")
    print("TAP version 13")
    if prometheus is None:
        print("1..0 # SKIP prometheus is not installed (apt-get install prometheus)")
        return 0
    targets, var_query = dashboard_targets()
    print(f"1..{3 + len(targets)}", flush=True)
    tmp = tempfile.mkdtemp(prefix="test-prometheus-")
    http_port, prom_port = free_port(), free_port()
    env = dict(os.environ, XDG_STATE_HOME=os.path.join(tmp, "state"), OPENBLAS_NUM_THREADS="1")
    out_path = os.path.join(tmp, "daemon.out")
    daemon = subprocess.Popen([INSPECTD, "run", "--http", f"127.0.0.1:{http_port}", "--demo-fps",
                               "4", "--station", "line-7"],
                              stdout=open(out_path, "w"),
                              stderr=open(os.path.join(tmp, "daemon.err"), "w"), env=env)
    with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: inspectd\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{http_port}']\n")
    prom_log = open(os.path.join(tmp, "prometheus.log"), "w")
    prom = subprocess.Popen([prometheus, f"--config.file={tmp}/prometheus.yml",
                             f"--storage.tsdb.path={tmp}/tsdb",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=prom_log, stderr=prom_log)
    try:
        # Up and scraping: the target is healthy and at least 12 scrapes of a
        # line that is inspecting (the [1m] rates need two samples in range).
        deadline = time.time() + 90
        health, first_up = None, None
        while time.time() < deadline:
            time.sleep(1)
            if daemon.poll() is not None or prom.poll() is not None:
                break
            try:
                r = api(prom_port, "targets")
            except (OSError, ValueError):
                continue
            active = r.get("data", {}).get("activeTargets", [])
            health = active[0]["health"] if active else None
            if health == "up":
                v = api(prom_port, "query", query="inspectd_parts_total")
                if v["data"]["result"] and first_up is None:
                    first_up = time.time()
                if first_up is not None and time.time() - first_up >= 12:
                    break
        tap(health == "up" and first_up is not None,
            "Prometheus scrapes the daemon's /metrics and sees parts",
            f"target health {health}; daemon exit {daemon.poll()}, prometheus exit {prom.poll()}")

        # The dashboard's variable, as Grafana resolves label_values(METRIC, LABEL).
        m = re.fullmatch(r"label_values\((\w+), *(\w+)\)", var_query)
        r = api(prom_port, f"label/{m.group(2)}/values", **{"match[]": m.group(1)})
        instances = r.get("data", [])
        tap(instances == [f"127.0.0.1:{http_port}"],
            "the dashboard's station variable finds the daemon", f"{var_query} -> {r}")
        # Grafana escapes each value as a regex inside a PromQL string: "127\\.0...".
        regex = "|".join(re.escape(i).replace("\\", "\\\\") for i in instances) or "none"

        for title, expr in targets:
            q = expr.replace("$instance", regex)
            r = api(prom_port, "query", query=q)
            result = r.get("data", {}).get("result", [])
            tap(r.get("status") == "success" and len(result) > 0,
                f"panel '{title}': {expr} returns data", json.dumps(r)[:300])

        # The numbers mean what the panel says: 4 parts/s from the demo.
        r = api(prom_port, "query",
                query=f'sum(rate(inspectd_parts_total{{instance=~"{regex}"}}[10s]))')
        rate = float(r["data"]["result"][0]["value"][1]) if r["data"]["result"] else 0.0
        tap(2.5 <= rate <= 5.5, "the Parts/s query shows the demo's 4 parts/s",
            f"{rate:.2f} parts/s")
    except Exception as e:  # a broken run is a failure, not a skip
        while tap.n < 3 + len(targets):
            tap(False, "the dashboard against Prometheus", f"{type(e).__name__}: {e}")
    finally:
        prom.send_signal(signal.SIGTERM)
        daemon.send_signal(signal.SIGTERM)
        for p in (prom, daemon):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if tap.failed:
            for name in ("daemon.err", "prometheus.log"):
                with open(os.path.join(tmp, name), errors="replace") as f:
                    print("# " + name + ":\n# " + "\n# ".join(f.read().splitlines()[-30:]))
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
