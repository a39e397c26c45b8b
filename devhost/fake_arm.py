"""A local fake Azure Resource Manager for the demo and the benchmark (dev only, not deployed).

It answers what the policy path asks, the way ARM documents it: policy states query results with
`policyDefinitionAction` (the effect, per assignment name), generic resource GETs with tags,
remediation PUT (201 + Accepted), GET (Accepted -> Running -> Succeeded) and listDeployments.
Every remediation PUT is recorded in `puts`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

STATES = ("Accepted", "Running", "Succeeded")


class FakeArm:
    """`effect_of(filter_text) -> effect` and `owner_of(resource_id) -> squad` shape the answers."""

    def __init__(self, effect_of: Callable[[str], str], owner_of: Callable[[str], str]) -> None:
        self.effect_of = effect_of
        self.owner_of = owner_of
        self.puts: list[dict[str, Any]] = []
        self.gets: dict[str, int] = {}
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeArm:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, doc = fake.handle(self.command, self.path, body)
                raw = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_PUT = do_POST = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def handle(self, method: str, target: str, body: Any) -> tuple[int, dict[str, Any]]:
        url = urlsplit(target)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if path.endswith("/queryResults"):
            return 200, {"value": [{"policyDefinitionAction": self.effect_of(query.get("$filter", ""))}]}
        if "/providers/Microsoft.PolicyInsights/remediations/" in path:
            if path.endswith("/listDeployments"):
                return 200, {"value": []}
            if method == "PUT":
                with self.lock:
                    self.puts.append({"path": path, "api_version": query.get("api-version"), "body": body})
                return 201, {"properties": {**(body or {}).get("properties", {}), "provisioningState": "Accepted"}}
            with self.lock:
                n = self.gets[path] = self.gets.get(path, 0) + 1
            return 200, {"properties": {"provisioningState": STATES[min(n - 1, len(STATES) - 1)]}}
        if method == "GET":
            owner = self.owner_of(path)
            return 200, {"id": path, "tags": {"owner": owner} if owner else {}}
        return 404, {"error": {"code": "NotFound", "message": f"{method} {path}"}}


DEV_OWNER = "platform"


def dev_effect_of(odata_filter: str) -> str:
    """The effect the dev fake ARM reports for an assignment, from its name: `*audit*` audit, `*deny*` deny,
    `*modify*` modify, anything else deployIfNotExists (remediable, so the whole path runs)."""
    name = odata_filter.lower().rsplit("/policyassignments/", 1)[-1]
    for word, effect in (("audit", "audit"), ("deny", "deny"), ("modify", "modify")):
        if word in name:
            return effect
    return "deployIfNotExists"


def dev_fake_arm() -> FakeArm:
    """The fake ARM `make run` starts with VALUEFLOW_FAKE_ARM=true: every resource owned by squad `platform`."""
    return FakeArm(dev_effect_of, owner_of=lambda resource_id: DEV_OWNER).start()
