"""The local host under a burst of connections and a slow-body attack, beside the baseline it
replaced: the standard library's ThreadingHTTPServer defaults (listen backlog 5, no read timeout,
one thread per connection), measured in the same run on the same machine.

    python -m bench.bench_host_load [--burst 200] [--slow 300] [--quick]

Prints, for each server: answered / reset connections of the burst, and the handler threads held
by half-sent bodies just after they arrive and after the host's read deadline has passed.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class _Baseline(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _burst(port: int, n: int) -> Counter[str]:
    def post(i: int) -> str:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/items/{i}?code=k", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return str(resp.status)
        except urllib.error.HTTPError as err:
            return str(err.code)
        except OSError as err:
            return type(err).__name__

    with ThreadPoolExecutor(n) as pool:
        return Counter(pool.map(post, range(n)))


def _slow(port: int, n: int, wait: float) -> tuple[int, int]:
    base = threading.active_count()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /api/items/1?code=k HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n12")
        socks.append(s)
    time.sleep(1.0)
    early = threading.active_count() - base
    time.sleep(wait)
    late = threading.active_count() - base
    for s in socks:
        s.close()
    return early, late


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--slow", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="100 and 100, short read deadline")
    args = parser.parse_args(argv)
    burst, slow = (100, 100) if args.quick else (args.burst, args.slow)
    deadline = 3.0 if args.quick else 30.0

    os.environ.setdefault("SAMPLE_RECORD_FILE", tempfile.mktemp())
    os.environ.setdefault("SAMPLE_SCHEDULE", "0 0 0 1 1 *")
    from devhost.server import LocalHost
    from shared.settings import load_settings
    from tests.fixtures import sample_app

    settings = load_settings({"VALUEFLOW_STATE_DIR": tempfile.mkdtemp()}, local_settings=None)
    host = LocalHost(sample_app.app, settings, key="k", port=0, run_schedules=False, read_deadline=deadline)
    host.start()
    baseline = ThreadingHTTPServer(("127.0.0.1", 0), _Baseline)
    baseline.daemon_threads = True
    baseline.handle_error = lambda *_: None  # type: ignore[method-assign]  # resets are counted, not printed
    threading.Thread(target=baseline.serve_forever, daemon=True).start()
    try:
        rows = []
        for name, port in (("baseline (stdlib defaults)", baseline.server_address[1]), ("local host", host.port)):
            answered = _burst(port, burst)
            early, late = _slow(port, slow, deadline + 5)
            rows.append((name, answered, early, late))
    finally:
        host.stop()
        baseline.shutdown()
    print(
        f"{burst} concurrent POSTs, then {slow} half-sent bodies (threads held 1 s in and after {deadline + 5:.0f} s more)"
    )
    for name, answered, early, late in rows:
        resets = sum(v for k, v in answered.items() if not k.isdigit())
        print(f"  {name:<28} burst: {dict(answered)} ({resets} failed)  slow bodies: {early} threads -> {late}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
