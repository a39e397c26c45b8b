"""`serve` (the local Functions host) and `doctor` (settings and connectivity, in plain words)."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from shared.errors import SettingsError, ValueFlowError
from shared.settings import load_settings, reset_settings


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the local Functions host on 127.0.0.1 (dev tool; Azurite must be running: use `make run`)",
        description="Run function_app.app with Core Tools' URL semantics: /api/<route>, "
        "/runtime/webhooks/eventgrid?functionName=<name>, /admin/functions/<name>.",
    )
    serve.add_argument("--port", type=int, help="port (default VALUEFLOW_PORT or 7071)")
    serve.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    serve.add_argument("--no-schedules", action="store_true", help="do not run timers and queue pollers")
    serve.add_argument("--host-json", default="host.json", help="host.json to read queue options from")
    serve.set_defaults(handler=cmd_serve)

    doctor = subparsers.add_parser(
        "doctor",
        help="check settings, then connect (read-only) to storage, the warehouse, ServiceNow and ARM; "
        "Teams webhooks are checked for shape and allow-list only",
    )
    doctor.set_defaults(handler=cmd_doctor)


def load_app(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError(f"cannot import the app module {module_name!r}: {exc}") from exc
    app = getattr(module, attr or "app", None)
    if app is None:
        raise SettingsError(f"{module_name} has no attribute {attr or 'app'!r}")
    return app


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from devhost.server import LocalHost, function_key
    except ImportError:
        print("error: the local host is a development tool and is not part of the deployed package", file=sys.stderr)
        return 2
    from shared.connectivity import check_storage_live
    from shared.observability import configure
    from shared.runtime import Runtime, set_runtime

    settings = load_settings()
    configure(settings)
    port = args.port or settings.valueflow_port
    if port and not _port_free(port):
        raise SettingsError(
            f"port {port} is in use (another `make run`?): stop that process or choose another port, "
            f"e.g. VALUEFLOW_PORT={port + 10000 if port < 55535 else 17071} make run"
        )
    runtime = Runtime(settings)
    set_runtime(runtime)
    storage = check_storage_live(runtime)
    if storage.status == "fail":
        raise SettingsError(f"storage: {storage.detail}")
    runtime.warehouse  # noqa: B018 - applies pending schema migrations now, at start, not on the first request
    key, generated = function_key(settings)
    app = load_app(args.app)
    host = LocalHost(
        app, settings, key=key, port=args.port, host_json=Path(args.host_json), run_schedules=not args.no_schedules
    )
    try:
        host.start()
    except OSError as exc:
        raise SettingsError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    print(f"ValueFlow local host (dev tool) on http://127.0.0.1:{host.port}", flush=True)
    note = " (generated, stored under " + settings.state_dir + "/function-key)" if generated else ""
    print(f"Function key{note}: {key}", flush=True)
    print("Functions:", flush=True)
    for line in host.describe():
        print(f"    {line}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("stopping local host", flush=True)
    host.stop()
    return 0


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cmd_doctor(args: argparse.Namespace) -> int:
    from shared.connectivity import run_doctor_checks
    from shared.health import overall
    from shared.runtime import Runtime

    reset_settings()
    try:
        settings = load_settings()
    except SettingsError as err:
        print("settings: FAIL")
        for problem in err.errors or [{"setting": "-", "problem": err.detail}]:
            print(f"  - {problem['setting']}: {problem['problem']}")
        return 1
    print(f"settings: ok (local.settings.json {'found' if Path('local.settings.json').is_file() else 'absent'})")
    try:
        checks = run_doctor_checks(Runtime(settings))
    except ValueFlowError as err:
        print(f"checks: FAIL {err.detail}")
        return 1
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skipped": "skip"}
    for check in checks:
        print(f"{check.name:<12} {marks.get(check.status, check.status)} {check.detail}")
    verdict = overall(checks)
    print(f"overall: {verdict}")
    return 1 if verdict == "unhealthy" else 0
