"""TAP output and a free loopback port, for the Python integration tests
(test-live-page.py, test-prometheus.py): imported from the scripts' own
folder."""
import socket


class Tap:
    """Numbered 'ok' / 'not ok' lines; counts what was said and what failed."""

    def __init__(self):
        self.n = 0
        self.failed = 0

    def __call__(self, ok, name, why=""):
        self.n += 1
        if not ok:
            self.failed += 1
        print(f"{'ok' if ok else 'not ok'} {self.n} {name}{(' # ' + why) if why and not ok else ''}",
              flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
