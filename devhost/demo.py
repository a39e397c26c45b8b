"""`make demo`: start Azurite and the embedded warehouse, run the app's main jobs once, print a summary.

The demo works in `.valueflow/demo/` (wiped at start) with its own Azurite on free ports, so it
never touches the state of `make run`. Each capability adds one step to `STEPS`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devhost.azurite import AzuriteError, free_port, start_azurite
from devhost.demo_alerts import step_alerts
from devhost.demo_approvals import step_approvals
from devhost.demo_costs import step_costs
from devhost.demo_demands import step_demands
from devhost.demo_dora import step_dora
from devhost.demo_policy import step_policy
from devhost.demo_review import step_review

DEMO_DIR = Path(".valueflow/demo")


@dataclass
class DemoContext:
    """What a demo step gets: the runtime, the running local host, and a place for its summary."""

    runtime: Any
    base_url: str
    key: str
    summary: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """Call the local host like curl would, with the function key."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("x-functions-key", self.key)
        req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, json.loads(raw) if raw else None


def step_foundation(ctx: DemoContext) -> None:
    status, body = ctx.call("GET", "/api/health")
    ctx.summary.append(f"health: HTTP {status}, {body['status'] if body else '-'}")
    for dep in (body or {}).get("dependencies", []):
        ctx.summary.append(f"  {dep['name']:<11} {dep['status']:<5} {dep['detail']}")


STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("Foundation: local host and dependencies", step_foundation),
    ("Approvals: critical anomaly round trip with a Logic App (dry-run)", step_approvals),
    ("Policy: event burst, coalesced remediation plan and escalations (dry-run)", step_policy),
    ("Cost anomalies: export -> Event Grid ingest -> daily scan -> episodes", step_costs),
    ("Alerts: queue -> Teams cards and incidents (outbox), storm -> digest", step_alerts),
    ("Demands: approved -> work item created -> moved to Done -> demand completed", step_demands),
    ("DORA: a week of deployments and Dynatrace problems -> metrics, failed deploys, digest", step_dora),
    ("Review: a cost card's Review link, opened as Teams would", step_review),
]


def main(argv: list[str] | None = None) -> int:
    serve = "--serve" in (sys.argv[1:] if argv is None else argv)
    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)
    DEMO_DIR.mkdir(parents=True)
    try:
        azurite = start_azurite(DEMO_DIR / "azurite", free_ports=True)
    except AzuriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # the demo's own state: set before the settings are read
    os.environ["AzureWebJobsStorage"] = azurite.connection_string
    os.environ.setdefault("WAREHOUSE_PATH", str(DEMO_DIR / "warehouse"))
    os.environ.setdefault("OUTBOX_DIR", str(DEMO_DIR / "outbox"))
    os.environ.setdefault("VALUEFLOW_LOG_FORMAT", "text")
    os.environ.setdefault("VALUEFLOW_STATE_DIR", str(DEMO_DIR))
    # the host's port is chosen now: the review links in the cards must point at it
    os.environ.setdefault("VALUEFLOW_PORT", str(free_port()))
    try:
        return _run(serve)
    finally:
        azurite.stop()


def _run(serve: bool = False) -> int:
    import logging

    from devhost.server import LocalHost
    from function_app import app
    from shared.observability import configure
    from shared.runtime import Runtime, set_runtime
    from shared.settings import load_settings

    settings = load_settings()
    configure(settings, level=logging.WARNING)
    runtime = Runtime(settings)
    set_runtime(runtime)
    host = LocalHost(app, settings, key="demo-key", port=settings.valueflow_port)
    host.start()
    ctx = DemoContext(runtime, f"http://127.0.0.1:{host.port}", "demo-key")
    started = time.monotonic()
    failed = 0
    try:
        for title, step in STEPS:
            print(f"\n== {title}", flush=True)
            mark = len(ctx.summary)
            try:
                step(ctx)
            except Exception as exc:  # a failing step must not hide the others
                failed += 1
                ctx.summary.append(f"FAILED: {type(exc).__name__}: {exc}")
            for line in ctx.summary[mark:]:
                print(line, flush=True)
        if serve:
            print(f"\nServing on {ctx.base_url} (key demo-key) until Ctrl-C: open the review link above", flush=True)
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                pass
    finally:
        host.stop()
    print(
        f"\nDemo finished in {time.monotonic() - started:.1f}s; state in {DEMO_DIR}/ (outbox: {settings.outbox_dir})",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
