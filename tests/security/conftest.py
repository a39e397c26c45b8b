"""Fixtures of the security suite: the local host in this process, with small limits, and raw sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.server import LocalHost
from shared.settings import load_settings
from tests.fixtures import sample_app

KEY = "test-function-key"


@pytest.fixture
def small_host(base_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHost]:
    """The sample app on the local host, in process, with few threads and short read limits."""
    record = tmp_path / "invocations.jsonl"
    record.touch()
    monkeypatch.setenv("SAMPLE_RECORD_FILE", str(record))
    monkeypatch.setenv("SAMPLE_SCHEDULE", "0 0 0 1 1 *")
    settings = load_settings(base_env, local_settings=tmp_path / "absent.json")
    host = LocalHost(
        sample_app.app,
        settings,
        key=KEY,
        port=0,
        run_schedules=False,
        max_threads=4,
        read_timeout=1.0,
        read_deadline=2.0,
    )
    host.start()
    host.record = record  # type: ignore[attr-defined]
    yield host
    host.stop()


def connect(host: LocalHost, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", host.port), timeout=timeout)


def read_all(sock: socket.socket) -> tuple[list[tuple[int, dict[str, str], bytes]], bool]:
    """Every HTTP response the server sends on this connection, and whether it closed the connection
    (False: it went quiet for the socket's timeout with the connection still open)."""
    data = b""
    closed = False
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out, closed


def invocations(host: LocalHost) -> list[str]:
    return Path(host.record).read_text().splitlines()  # type: ignore[attr-defined]
