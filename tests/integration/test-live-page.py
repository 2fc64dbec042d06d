#!/usr/bin/python3
"""The live page in a real browser: the demo line serves it (inspectd run
--http), headless Chromium renders it, and the test reads the DOM after the
page's scripts ran, over the DevTools protocol (a small WebSocket client
below: the standard library has none). It checks that a recent part's seq,
verdict and picture are shown, that the score chart has points, and takes
screenshots (meson-logs/live-page-*.png) of a passed and a failed part.

TAP output; skips (the prerequisite missing) without chromium."""
import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

from tap import Tap, free_port

INSPECTD = os.environ.get("INSPECTD", "build/daemon/inspectd")
OUTDIR = os.environ.get("INSP_TEST_OUTDIR", os.path.join(os.getcwd(), "meson-logs"))
tap = Tap()


class WebSocket:
    """Just enough RFC 6455 for the DevTools protocol: text frames, client
    masking, 16/64-bit lengths, fragments."""

    def __init__(self, url):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        self.sock = socket.create_connection((m.group(1), int(m.group(2))), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {m.group(3)} HTTP/1.1\r\nHost: {m.group(1)}:{m.group(2)}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise IOError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise IOError("websocket handshake refused: " + head.decode(errors="replace"))
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise IOError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self):
        msg = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            if b0 & 0x0F == 0x8:
                raise IOError("websocket closed by the browser")
            msg += payload
            if b0 & 0x80:
                return msg.decode()

    def call(self, method, **params):
        self.next_id += 1
        self.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise IOError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r["result"].get("value")


STATE_JS = """JSON.stringify({
  seq: document.getElementById('seq').textContent,
  verdict: document.getElementById('verdict').textContent,
  part: document.getElementById('part-id').textContent,
  regions: document.getElementById('regions').textContent,
  img_seq: document.getElementById('frame').dataset.seq || null,
  img_kind: document.getElementById('frame').dataset.kind || null,
  img_w: document.getElementById('frame').naturalWidth,
  img_done: document.getElementById('frame').complete,
  conn: document.getElementById('conn').textContent,
  points: scores.length,
  pass: document.getElementById('n-pass').textContent,
})"""


def decisions(path):
    """seq -> (verdict, part) from the daemon's decision lines."""
    out = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"seq=(\d+) part=(\S+) verdict=(\w+)", line)
            if m:
                out[int(m.group(1))] = (m.group(3), m.group(2))
    return out


def main():
    chromium = shutil.which("chromium")
    print("TAP version 13")
    if chromium is None:
        print("1..0 # SKIP chromium is not installed (apt-get install chromium)")
        return 0
    print("1..5", flush=True)
    tmp = tempfile.mkdtemp(prefix="test-live-page-")
    port = free_port()
    env = dict(os.environ, XDG_STATE_HOME=os.path.join(tmp, "state"), OPENBLAS_NUM_THREADS="1")
    out_path = os.path.join(tmp, "daemon.out")
    daemon = subprocess.Popen([INSPECTD, "run", "--http", f"127.0.0.1:{port}", "--demo-fps", "4",
                               "--station", "line-7"],
                              stdout=open(out_path, "w"), stderr=open(os.path.join(tmp, "daemon.err"), "w"),
                              env=env)
    browser = None
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 60
        while time.time() < deadline:
            with open(out_path) as f:
                if url in f.read():
                    break
            if daemon.poll() is not None:
                break
            time.sleep(0.2)
        with open(out_path) as f:
            tap(url in f.read(), "the demo prints the live page's URL")

        browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                    "--remote-debugging-port=0", f"--user-data-dir={tmp}/chromium",
                                    "--window-size=1280,800", "--hide-scrollbars", url],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ws_url = None
        while ws_url is None:
            line = browser.stderr.readline()
            if not line:
                raise IOError("chromium exited before it said where DevTools listens")
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                ws_url = m.group(1)
        dt_port = re.match(r"ws://[^:]+:(\d+)/", ws_url).group(1)
        page_ws = None
        for _ in range(100):
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{dt_port}/json/list"))
            pages = [t for t in targets if t.get("type") == "page" and t["url"].startswith(url)]
            if pages:
                page_ws = pages[0]["webSocketDebuggerUrl"]
                break
            time.sleep(0.1)
        ws = WebSocket(page_ws)
        # The panel the page is laid out for (--window-size counts the window's frame).
        ws.call("Emulation.setDeviceMetricsOverride", width=1280, height=800, deviceScaleFactor=1,
                mobile=False)

        def wait_state(pred, timeout):
            end = time.time() + timeout
            st = None
            while time.time() < end:
                raw = ws.evaluate(STATE_JS)  # None while the page is still loading
                st = json.loads(raw) if raw else st
                if st is not None and pred(st):
                    return st, True
                time.sleep(0.25)
            return st, False

        def shows_part(st):
            return (st["seq"].isdigit() and st["img_seq"] is not None and st["img_done"]
                    and st["img_w"] > 0)

        st, ok = wait_state(shows_part, 30)
        seen = decisions(out_path)
        last = max(seen) if seen else -1
        seq = int(st["seq"]) if st and st["seq"].isdigit() else -1
        ok = ok and seq in seen and seq >= last - 12 and \
            seen[seq][0].upper() == st["verdict"] and seen[seq][1] == st["part"] and \
            abs(int(st["img_seq"]) - seq) <= 4 and st["img_kind"] == "overlay"
        tap(ok, "the page shows a recent part: its seq, verdict, part id and its picture",
            f"page {st}, daemon's last seq {last}, daemon said {seen.get(seq)}")
        st, ok = wait_state(lambda s: s["points"] >= 5 and s["conn"] == "live", 20)
        tap(ok, "the score chart has points and the stream is live", f"page {st}")

        os.makedirs(OUTDIR, exist_ok=True)

        def screenshot(name):
            png = base64.b64decode(ws.call("Page.captureScreenshot", format="png")["data"])
            path = os.path.join(OUTDIR, name)
            with open(path, "wb") as f:
                f.write(png)
            w, h = struct.unpack(">II", png[16:24])
            print(f"# screenshot {path} ({w}x{h})", flush=True)
            return png[:8] == b"\x89PNG\r\n\x1a\n" and w == 1280 and h == 800

        # A failed part: the demo makes every 5th one defective.
        st, ok = wait_state(lambda s: shows_part(s) and s["verdict"] == "FAIL" and
                            int(s["img_seq"]) == int(s["seq"]) and s["regions"] not in ("0", "\u2013"), 30)
        seen = decisions(out_path)
        ok = ok and seen.get(int(st["seq"]), ("",))[0] == "fail"
        tap(ok and screenshot("live-page-fail.png"),
            "a failed part is shown with its regions, and a 1280x800 screenshot is taken",
            f"page {st}")
        st, ok = wait_state(lambda s: shows_part(s) and s["verdict"] == "PASS" and
                            int(s["img_seq"]) == int(s["seq"]), 30)
        tap(ok and screenshot("live-page-pass.png"), "a passed part is shown, screenshot taken",
            f"page {st}")
    except Exception as e:  # a broken browser session is a failure, not a skip
        while tap.n < 5:
            tap(False, "the live page", f"{type(e).__name__}: {e}")
    finally:
        if browser is not None:
            browser.kill()
            browser.wait()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
        if tap.failed == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"# kept {tmp}", flush=True)
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
