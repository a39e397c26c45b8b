"""Start and stop Azurite (npm package `azurite`, installed in node_modules by `make install`).

Used by `make run`, `make demo` and the test fixtures: never started by hand. Data lives under
`<state_dir>/azurite`; ports are the standard 10000-10002 (AZURITE_PORTS chooses others) unless asked
for free ones.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shared.adapters.storage import azurite_connection_string

ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"


class AzuriteError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@dataclass
class Azurite:
    """A running Azurite process (or one found already listening on the standard ports)."""

    blob_port: int
    queue_port: int
    table_port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def connection_string(self) -> str:
        return azurite_connection_string("127.0.0.1", self.blob_port, self.queue_port, self.table_port)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def start_azurite(
    data_dir: Path,
    *,
    free_ports: bool = False,
    reuse_running: bool = True,
    timeout: float = 30.0,
    in_memory: bool = False,
    ports: tuple[int, int, int] = (10000, 10001, 10002),
) -> Azurite:
    """Start Azurite with its data in `data_dir`; with `free_ports` on three unused ports (tests).

    With `reuse_running` and the standard ports already answering, that instance is used as is. With
    `in_memory` nothing is written to disk (tests and benchmarks: faster, and gone when it stops)."""
    if not free_ports and reuse_running and all(port_open(p) for p in ports):
        return Azurite(*ports)
    binary = AZURITE_BIN if AZURITE_BIN.exists() else shutil.which("azurite")
    if not binary:
        raise AzuriteError(
            "Azurite is not installed: run `make install` (it runs `npm install` in the project), "
            "Node.js 20 and npm must be on PATH"
        )
    chosen = [free_port(), free_port(), free_port()] if free_ports else list(ports)
    busy = [p for p in chosen if port_open(p)]
    if busy:
        raise AzuriteError(
            f"cannot start Azurite: port(s) {', '.join(map(str, busy))} are in use by another program; stop it, "
            "or choose three free ports, e.g. AZURITE_PORTS=20000,20001,20002 make run"
        )
    ports = (chosen[0], chosen[1], chosen[2])
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "azurite.log"
    cmd = [
        str(binary),
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
        *(["--inMemoryPersistence"] if in_memory else ["--location", str(data_dir)]),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(ports[0]),
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        str(ports[1]),
        "--tableHost",
        "127.0.0.1",
        "--tablePort",
        str(ports[2]),
    ]
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(data_dir))
    instance = Azurite(ports[0], ports[1], ports[2], process=proc, log_path=log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
            last = lines[-1][:300] if lines else "no output"
            raise AzuriteError(f"Azurite exited with code {proc.returncode}: {last} (full log: {log_path})")
        if all(port_open(p) for p in ports):
            return instance
        time.sleep(0.1)
    instance.stop()
    raise AzuriteError(f"Azurite did not open ports {ports} within {timeout:.0f}s (log: {log_path})")
