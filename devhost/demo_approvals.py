"""Demo step: a critical cost anomaly's approval round trip, in dry-run, against a fake Logic App.

A tiny http.server on 127.0.0.1 plays the approval Logic App: its trigger accepts the request, and
it records the callback its waiting webhook action receives. Nothing touches Azure (dry-run).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

EPISODE: dict[str, Any] = {
    "EPISODE_ID": "ce-demo0approval0001",
    "SERIES_ID": "/subscriptions/00000000-0000-0000-0000-0000000000d1/resourceGroups/rg-demo/providers/"
    "Microsoft.Compute/virtualMachines/vm-demo-runaway",
    "SERIES_KIND": "resource",
    "SERIES_BUCKET": 1,
    "START_DATE": "2026-11-20",
    "LAST_FLAGGED_DATE": "2026-11-22",
    "LAST_SCORED_DATE": "2026-11-22",
    "STATUS": "open",
    "SEVERITY": "critical",
    "OWNER": "squad-demo",
    "SUBSCRIPTION_ID": "00000000-0000-0000-0000-0000000000d1",
    "EXPECTED": 480.0,
    "EXCESS_USD_PER_DAY": 28800.0,
    "EXCESS_USD_PER_HOUR": 1200.0,
    "TOTAL_EXCESS_USD": 57600.0,
    "SUPPRESSED": False,
    "UPDATED_AT": "2026-11-22 07:00:00",
}


class _FakeLogicApp(BaseHTTPRequestHandler):
    received: list[tuple[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append((self.path.split("?")[0], json.loads(body or b"{}")))
        self.send_response(202 if self.path.startswith("/trigger") else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def step_approvals(ctx: Any) -> None:
    from dataclasses import replace

    from shared.approvals.audit import read_audit
    from shared.approvals.requests import request_approval
    from shared.runtime import Runtime, set_runtime

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLogicApp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        cols = ", ".join(EPISODE)
        with ctx.runtime.warehouse.session() as wh:
            wh.execute(
                f"INSERT INTO COST_ANOMALIES ({cols}) VALUES ({', '.join(['%s'] * len(EPISODE))})",
                tuple(EPISODE.values()),
            )
        # the cost job's hook, pointed at the fake Logic App
        asking = Runtime(replace(ctx.runtime.settings, approval_logic_app_url=base + "/trigger"))
        asked = request_approval(asking, EPISODE)
        ctx.summary.append(f"approval requested from the Logic App: {asked.state} (action {asked.action})")
        # the Logic App's HTTP Webhook action subscribes; a loopback callback is allowed only when
        # listed, so the demo's functions run with CALLBACK_ALLOWED_HOSTS=127.0.0.1 for this step
        set_runtime(Runtime(replace(ctx.runtime.settings, callback_allowed_hosts=("127.0.0.1",))))
        sub = {"callbackUrl": base + "/callback/run-demo", "episodeId": EPISODE["EPISODE_ID"], "action": "stop"}
        status, body = ctx.call("POST", "/api/approvals", sub, {"Idempotency-Key": "run-demo"})
        ctx.summary.append(
            f"POST /api/approvals: HTTP {status}, approval {body.get('approvalId')} {body.get('status')}"
        )
        decision = {"decision": "approve", "approver": "manager@example.test", "reason": "demo"}
        status, body = ctx.call("POST", f"/api/approvals/{EPISODE['EPISODE_ID']}/decision", decision)
        ctx.summary.append(f"POST .../decision: HTTP {status}, {body.get('status')} by {body['decision']['approver']}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(p == "/callback/run-demo" for p, _ in _FakeLogicApp.received):
            time.sleep(0.2)
        callbacks = [b for p, b in _FakeLogicApp.received if p == "/callback/run-demo"]
        if callbacks:
            ctx.summary.append(
                f"Logic App called back: decision={callbacks[0]['decision']} detail={callbacks[0]['detail']}"
            )
        else:
            ctx.summary.append("Logic App was NOT called back within 30 s")
        for row in read_audit(ctx.runtime.storage, EPISODE["EPISODE_ID"]):
            ctx.summary.append(
                f"audit: {row['decision']} by {row['approver']} at {row['decided_at']}: {row['action']} "
                f"{row['outcome']} ({row['mode']})"
            )
    finally:
        set_runtime(ctx.runtime)
        server.shutdown()
