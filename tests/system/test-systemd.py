#!/usr/bin/python3
"""System test: the installed build under a real systemd 252, booted with
systemd-nspawn in a copy (overlay) of the cached bookworm rootfs, all in one
boot. Proves, each as one TAP line: Type=notify start and results on the
broker inside the container; the sandbox (no capabilities, read-only root,
state and spool writable); the watchdog killing and restarting a stalled
daemon with seq carrying on; systemctl reload applying a threshold and
failing on an invalid config while the running one stays; systemctl stop
publishing the retained offline status; two inspectd@ instances side by side.
Usage: test-systemd.py BUILDDIR SRCDIR. Skips (77) only when the machine lacks
root, systemd-nspawn, nsenter or a way to make the rootfs."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BUILD, SRC = sys.argv[1], sys.argv[2]
ROOTFS = os.environ.get("INSPECTD_CI_ROOTFS", "/var/cache/inspectd-ci/rootfs")
n = 0
failed = 0


def tap(ok, what, detail=""):
    global n, failed
    n += 1
    failed += 0 if ok else 1
    print(f"{'ok' if ok else 'not ok'} {n} - {what}", flush=True)
    if not ok and detail:
        for line in str(detail).splitlines()[-25:]:
            print(f"# {line}", flush=True)


def skip_all(why):
    print(f"1..0 # SKIP {why}", flush=True)
    sys.exit(77)


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r


if os.geteuid() != 0:
    skip_all("needs root (systemd-nspawn)")
for tool in ("systemd-nspawn", "nsenter"):
    if not shutil.which(tool):
        skip_all(f"no {tool} (Debian: systemd-container, util-linux)")
if not os.path.exists(os.path.join(ROOTFS, "usr/bin/mosquitto_sub")) and not shutil.which(
        "debootstrap"):
    skip_all(f"no rootfs at {ROOTFS} and no debootstrap to make it")
# make-rootfs.sh returns at once when the cached rootfs has this package list.
if shutil.which("debootstrap"):
    print(f"# the rootfs at {ROOTFS} (made or brought up to date: 2-3 minutes if so)", flush=True)
    run([os.path.join(SRC, "tests/system/make-rootfs.sh"), ROOTFS], timeout=900)

work = tempfile.mkdtemp(prefix="inspectd-system.")
merged = os.path.join(work, "root")
nspawn = None
cpid = None
sub = None


def sh(cmd, check=True, timeout=60):
    """Runs a shell command inside the container (all its namespaces)."""
    return run(["nsenter", "-t", str(cpid), "-a", "/bin/sh", "-c", cmd], check=check, timeout=timeout)


def write(path, text):
    full = merged + path
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)


def wait(pred, secs, step=0.3):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def show(unit, prop):
    return sh(f"systemctl show -p {prop} --value {unit}", check=False).stdout.strip()


def results(log, since=0):
    """Result messages received so far (topic, payload dict), from line since."""
    out = []
    try:
        lines = open(log, errors="replace").read().splitlines()
    except OSError:
        return out
    for line in lines[since:]:
        topic, _, payload = line.partition(" ")
        if topic.endswith("/result"):
            try:
                out.append((topic, json.loads(payload)))
            except ValueError:
                pass
    return out


def nlines(log):
    try:
        return len(open(log, errors="replace").read().splitlines())
    except OSError:
        return 0


try:
    # ---- the build, installed with prefix /usr into an overlay of the rootfs
    opts = json.loads(run(["meson", "introspect", "--buildoptions", BUILD]).stdout)
    prefix = next(o["value"] for o in opts if o["name"] == "prefix")
    build = BUILD
    if prefix != "/usr":
        build = os.path.join(BUILD, "system-prefix-usr")
        print(f"# {BUILD} has prefix {prefix}: building with prefix /usr in {build}", flush=True)
        if not os.path.exists(os.path.join(build, "build.ninja")):
            run(["meson", "setup", build, SRC, "--prefix=/usr"])
        run(["meson", "compile", "-C", build], timeout=900)
    stage = os.path.join(work, "stage")
    run(["meson", "install", "-C", build, "--destdir", stage, "--no-rebuild", "--quiet"])
    for d in ("upper", "work", "root"):
        os.makedirs(os.path.join(work, d))
    r = run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={ROOTFS},upperdir={work}/upper,workdir={work}/work", merged], check=False)
    if r.returncode != 0:
        os.rmdir(merged)
        run(["cp", "-a", ROOTFS, merged])
    run(["cp", "-a", stage + "/.", merged + "/"])
    write("/etc/inspectd/inspectd.conf.d/10-system-test.conf",
          "[station]\nid = sys1\n[camera]\nsource = test\nloop = true\nfps = 10\n"
          "[model]\nworkers = 1\n[mqtt]\nhost = 127.0.0.1\nport = 1883\n")
    # A short watchdog so that a stalled daemon is killed within seconds; no
    # core dump of it.
    write("/etc/systemd/system/inspectd.service.d/50-system-test.conf",
          "[Service]\nWatchdogSec=4s\nLimitCORE=0\n")
    for inst in ("a", "b"):
        station = "[station]\nid = a\n" if inst == "a" else ""
        write(f"/etc/inspectd/{inst}.conf",
              station + "[camera]\nsource = test\nloop = true\nfps = 5\n"
              "[model]\nworkers = 1\n[mqtt]\nhost = 127.0.0.1\n")
    wants = merged + "/etc/systemd/system/multi-user.target.wants"
    os.makedirs(wants, exist_ok=True)
    os.symlink("/usr/lib/systemd/system/inspectd.service", wants + "/inspectd.service")

    # ---- boot
    nspawn = subprocess.Popen(["systemd-nspawn", "--register=no", "--keep-unit", "--private-network",
                               "-b", "-D", merged, "--console=passive", "--machine=inspectd-system"],
                              stdout=open(os.path.join(work, "console.log"), "w"), stderr=subprocess.STDOUT)

    def child():
        try:
            kids = open(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children").read().split()
            return int(kids[0]) if kids else None
        except OSError:
            return None
    cpid = wait(child, 20)
    if not cpid:
        raise RuntimeError("systemd-nspawn started no container:\n" + open(os.path.join(work, "console.log")).read())
    wait(lambda: run(["nsenter", "-t", str(cpid), "-a", "systemctl", "is-system-running"],
                     check=False).stdout.strip() in ("running", "degraded"), 60)
    sublog = os.path.join(work, "sub.log")
    sub = subprocess.Popen(["nsenter", "-t", str(cpid), "-a", "mosquitto_sub", "-h", "127.0.0.1", "-q", "1", "-v",
                            "-t", "inspectd/+/result", "-t", "inspectd/+/status"], stdout=open(sublog, "w"), stderr=subprocess.STDOUT)

    # ---- (a) Type=notify start, results published
    active = wait(lambda: show("inspectd.service", "ActiveState") == "active", 60)
    r = sh("systemctl is-active inspectd.service; systemctl show -p Type --value inspectd.service", check=False)
    tap(active and r.stdout.split() == ["active", "notify"],
        "inspectd.service (Type=notify) is active after boot: systemctl is-active says active",
        r.stdout + sh("journalctl -b -u inspectd --no-pager | tail -30", check=False).stdout)
    r = sh("mosquitto_sub -h 127.0.0.1 -t inspectd/sys1/result -C 5 -W 30", check=False, timeout=40)
    got = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    tap(len(got) == 5 and all(g.get("station") == "sys1" and "seq" in g for g in got),
        "5 results published to the broker inside the container (mosquitto_sub -C 5 -W 30)",
        r.stdout + r.stderr)

    # ---- (f) the sandbox
    pid = show("inspectd.service", "MainPID")
    st = sh(f"grep -E '^(CapEff|CapPrm|Uid)' /proc/{pid}/status", check=False).stdout
    capeff = [line.split()[1] for line in st.splitlines() if line.startswith("CapEff")]
    tap(capeff == ["0000000000000000"], f"the daemon (pid {pid}) has no capabilities: CapEff 0", st)
    uid = sh("id -u inspectd").stdout.strip()
    gid = sh("id -g inspectd").stdout.strip()
    enter = f"nsenter -t {pid} -m -S {uid} -G {gid} --"
    # As root in its mount namespace, so that EROFS (not EACCES) is the answer.
    r = sh(f"nsenter -t {pid} -m -- sh -c 'touch /usr/x 2>&1; touch /etc/inspectd/x 2>&1; touch /x 2>&1; true'",
           check=False)
    tap(r.stdout.count("Read-only file system") == 3,
        "root is read-only for it: /, /usr, /etc/inspectd give EROFS in its mount namespace", r.stdout + r.stderr)
    r = sh(f"{enter} sh -c 'for d in /var/lib/inspectd /var/lib/inspectd/spool; do "
           "touch $d/.w && rm $d/.w && echo writable $d; done'", check=False)
    tap(r.stdout.split("\n").count("writable /var/lib/inspectd") == 1 and "writable /var/lib/inspectd/spool" in r.stdout,
        "state folder /var/lib/inspectd and spool /var/lib/inspectd/spool are writable for it", r.stdout + r.stderr)

    # ---- (b) watchdog
    restarts0 = int(show("inspectd.service", "NRestarts") or 0)
    sh(f"kill -STOP {pid}")
    time.sleep(1.0)
    mark = nlines(sublog)
    before = results(sublog)
    last = max((p["seq"] for t, p in before if t == "inspectd/sys1/result"), default=-1)
    newpid = wait(lambda: (lambda p: p if p not in ("", "0", pid) else None)(show("inspectd.service", "MainPID")), 30)
    journal = sh("journalctl -b -u inspectd --no-pager", check=False).stdout
    restarts1 = int(show("inspectd.service", "NRestarts") or 0)
    tap(bool(newpid) and restarts1 == restarts0 + 1 and "Watchdog timeout" in journal,
        f"SIGSTOP'd daemon killed by the watchdog (WatchdogSec=4s) and restarted: pid {pid} -> {newpid}",
        journal)
    seen = {p["seq"] for t, p in before}
    after = wait(lambda: [p for t, p in results(sublog, mark) if t == "inspectd/sys1/result" and p["seq"] not in seen], 40)
    first = after[0]["seq"] if after else None
    tap(first is not None and first > last,
        f"seq carries on across the watchdog restart: first new seq {first} > last before {last}",
        open(sublog, errors="replace").read()[-2000:])

    # ---- (c) reload
    write("/etc/inspectd/inspectd.conf.d/20-threshold.conf", "[inspection]\nthreshold = 0.73\n")
    r = sh("systemctl reload inspectd.service", check=False)
    mark = nlines(sublog)
    applied = wait(lambda: [p for t, p in results(sublog, mark) if abs(p.get("threshold", 0) - 0.73) < 1e-4], 20)
    tap(r.returncode == 0 and bool(applied),
        "systemctl reload succeeds and the new threshold 0.73 is in the next results", r.stdout + r.stderr)
    pid = show("inspectd.service", "MainPID")
    write("/etc/inspectd/inspectd.conf.d/20-threshold.conf", "[inspection]\nthreshold = bogus\n")
    r = sh("systemctl reload inspectd.service", check=False)
    time.sleep(2)
    mark = nlines(sublog)
    still = wait(lambda: results(sublog, mark)[2:], 20)
    tap(r.returncode != 0 and show("inspectd.service", "ActiveState") == "active"
        and show("inspectd.service", "MainPID") == pid and bool(still)
        and all(abs(p.get("threshold", 0) - 0.73) < 1e-4 for t, p in still),
        f"systemctl reload fails on an invalid config (exit {r.returncode}); the daemon runs on with threshold 0.73",
        r.stdout + r.stderr + sh("journalctl -b -u inspectd --no-pager | tail -15", check=False).stdout)
    os.unlink(merged + "/etc/inspectd/inspectd.conf.d/20-threshold.conf")

    # ---- (d) stop: the retained offline status
    r = sh("systemctl stop inspectd.service", check=False, timeout=60)
    s = sh("mosquitto_sub -h 127.0.0.1 -t inspectd/sys1/status -C 1 -W 5", check=False)
    try:
        state = json.loads(s.stdout).get("state")
    except ValueError:
        state = None
    tap(r.returncode == 0 and state == "offline",
        f"systemctl stop leaves the retained status state '{state}' (expected offline)", s.stdout + s.stderr)

    # ---- (e) two instances
    r = sh("systemctl start inspectd@a.service inspectd@b.service", check=False, timeout=120)
    mark = nlines(sublog)
    time.sleep(12)
    stations = {p.get("station") for t, p in results(sublog, mark)}
    mlog = sh("journalctl -b -u mosquitto --no-pager; cat /var/log/mosquitto/mosquitto.log 2>/dev/null", check=False).stdout
    both = sh("systemctl is-active inspectd@a.service inspectd@b.service", check=False).stdout.split()
    tap(r.returncode == 0 and both == ["active", "active"] and "a" in stations and len(stations) >= 2
        and "already connected" not in mlog,
        f"inspectd@a and inspectd@b both active and publishing (stations {sorted(s for s in stations if s)}), "
        "neither kicked off the broker", r.stderr + mlog[-1500:])
    tap("b" in stations and "as inspectd-b " in mlog,
        "inspectd@b (no [station] id in b.conf) publishes as station 'b' with client id inspectd-b: "
        "the instance unit passes its instance name", f"stations seen: {stations}\n" + mlog[-1500:])
    sh("systemctl stop inspectd@a.service inspectd@b.service", check=False, timeout=60)
except Exception as e:  # our own failure: a failed test, never a skip
    tap(False, "the system test ran to its end", repr(e))
finally:
    if sub:
        sub.terminate()
    if cpid:
        run(["nsenter", "-t", str(cpid), "-a", "systemctl", "poweroff"], check=False)
    if nspawn:
        try:
            nspawn.wait(30)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait()
    run(["umount", merged], check=False)
    shutil.rmtree(work, ignore_errors=True)
print(f"1..{n}", flush=True)
sys.exit(1 if failed else 0)
