"""Shared fixtures: real local services, started here and stopped after.

A test that needs a service fails with a clear message when it cannot start it; it never skips.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAMPLES = FIXTURES / "samples"  # copies of ../shared/samples: tests never read outside the repo
sys.path.insert(0, str(ROOT))

from devhost.azurite import Azurite, AzuriteError, start_azurite  # noqa: E402
from shared.runtime import Runtime, set_runtime  # noqa: E402
from shared.settings import Settings, load_settings  # noqa: E402


def load_fixture(name: str) -> Any:
    """A JSON payload from tests/fixtures."""
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    try:
        instance = start_azurite(tmp_path_factory.mktemp("azurite"), free_ports=True, in_memory=True)
    except AzuriteError as err:
        pytest.fail(f"Azurite is needed for this test and could not start: {err}", pytrace=False)
    yield instance
    instance.stop()


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """Settings for one test: its own warehouse folder and outbox, text logs."""
    return {
        "WAREHOUSE_PATH": str(tmp_path / "warehouse"),
        "OUTBOX_DIR": str(tmp_path / "outbox"),
        "VALUEFLOW_STATE_DIR": str(tmp_path / "state"),
        "VALUEFLOW_LOG_FORMAT": "text",
        "LOCAL_FUNCTION_KEY": "test-function-key",
    }


@pytest.fixture
def env(base_env: dict[str, str], azurite: Azurite) -> dict[str, str]:
    return {**base_env, "AzureWebJobsStorage": azurite.connection_string}


@pytest.fixture
def settings(env: dict[str, str], tmp_path: Path) -> Settings:
    return load_settings(env, local_settings=tmp_path / "absent.json")


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    set_runtime(rt)
    yield rt
    set_runtime(None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HostProcess:
    """A `python -m shared.cli serve` process and how to call it."""

    process: subprocess.Popen[str]
    port: int
    key: str
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        key: bool = True,
    ) -> tuple[int, dict[str, str], Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if key:
            req.add_header("x-functions-key", self.key)
        if data is not None and not any(k.lower() == "content-type" for k in (headers or {})):
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                payload = resp.read()
                return resp.status, dict(resp.headers), _maybe_json(payload)
        except urllib.error.HTTPError as err:
            payload = err.read()
            return err.code, dict(err.headers), _maybe_json(payload)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _maybe_json(payload: bytes) -> Any:
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")


def start_host(
    env: dict[str, str], log_path: Path, app: str = "function_app:app", extra: list[str] | None = None
) -> HostProcess:
    """Start the local host as a real process and wait until it answers."""
    port = free_port()
    full_env = {**os.environ, **env, "VALUEFLOW_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    log = open(log_path, "w")  # noqa: SIM115 - the child writes to it
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "serve", "--app", app, *(extra or [])],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    host = HostProcess(proc, port, env["LOCAL_FUNCTION_KEY"], log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the local host exited with {proc.returncode}:\n{host.log()[-3000:]}", pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return host
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the local host did not answer within 60s:\n{host.log()[-3000:]}", pytrace=False)


def stop_host(host: HostProcess) -> None:
    host.process.terminate()
    try:
        host.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        host.process.kill()
