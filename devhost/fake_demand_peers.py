"""Local fake Azure DevOps, ServiceNow (demand table) and Backstage peers (dev only, not deployed).

Built from the services' documented behaviour, for the tests (behind pytest-httpserver, via
`werkzeug_handler`) and the demo (`serve()`, a thread on 127.0.0.1):
- Azure DevOps: work items (create with JSON Patch -> 200 with `rev` 1, GET with relations, PATCH
  -> rev + 1, batch `?ids=` with errorPolicy=omit, WIQL `[System.Tags] CONTAINS`), unknown work item
  -> 404 `TF401232`, unknown field -> 400 `TF51535`, wrong content type -> 415; builds' work items;
  git push commits, commit changes and items with content; a bad PAT gets the 203 sign-in page.
- ServiceNow Table API on `dmn_demand`: PATCH with display values, `work_notes` appended to a
  journal, GET by sys_id / by encoded query (an unknown field in `sysparm_query` is ignored, as
  ServiceNow does), `sysparm_display_value=all`, paging with `sysparm_limit`/`sysparm_offset`.
- Backstage catalog: `POST /api/catalog/refresh` (404 NotFoundError for an unknown entity) and
  `POST /api/catalog/locations` (201, 409 ConflictError when registered), bearer token required.
Every fake can be told to fail the next matching requests (`fail(...)`: a status with headers such
as Retry-After, or a delay longer than the client's timeout).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

Answer = tuple[int, dict[str, str], bytes]


def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(doc).encode()


@dataclass
class Failure:
    method: str
    path_pattern: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0
    times: int = 1


class FakePeer:
    """Request routing, failure injection, a request log and an http.server or werkzeug front."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self.failures: list[Failure] = []
        self._server: ThreadingHTTPServer | None = None

    def fail(
        self,
        method: str,
        path_pattern: str,
        status: int = 0,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """The next `times` requests matching (method, regex on the path) answer `status` (after `delay`)."""
        with self.lock:
            self.failures.append(Failure(method, path_pattern, status, headers or {}, body, delay, times))

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self.lock:
            self.requests.append((method, path))
            failure = next(
                (f for f in self.failures if f.method == method and re.search(f.path_pattern, path) and f.times > 0),
                None,
            )
            if failure is not None:
                failure.times -= 1
        if failure is not None:
            if failure.delay:
                time.sleep(failure.delay)
            if failure.status:
                return _json(failure.status, failure.body if failure.body is not None else {}, failure.headers)
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            return _json(400, {"message": "The request body is not valid JSON."})
        with self.lock:
            return self.route(method, path, query, lowered, doc)

    def route(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], doc: Any) -> Answer:
        raise NotImplementedError

    # -- fronts --

    def werkzeug_handler(self) -> Callable[[Any], Any]:
        from werkzeug import Response

        def handler(request: Any) -> Any:
            target = request.full_path if request.query_string else request.path
            status, headers, body = self.handle(request.method, target, dict(request.headers), request.get_data())
            return Response(body, status=status, headers=headers)

        return handler

    def serve(self) -> str:
        """Start on a free loopback port (a daemon thread); returns the base URL."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status, headers, body = fake.handle(
                    self.command, self.path, dict(self.headers), self.rfile.read(length)
                )
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test): nothing to answer

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# ------------------------------------------------------------------------------------------------


KNOWN_FIELDS = {
    "System.Title",
    "System.Description",
    "System.Tags",
    "System.State",
    "System.AreaPath",
    "System.IterationPath",
    "Microsoft.VSTS.Common.Priority",
    "Microsoft.VSTS.Common.AcceptanceCriteria",
}


class FakeAzureDevOps(FakePeer):
    """One organization (`/<org>`) with one project; `pat` set = that PAT is required."""

    def __init__(self, org: str = "example-org", project: str = "Platform Team", *, pat: str = "") -> None:
        super().__init__()
        self.org = org
        self.project = project
        self.pat = pat
        self.work_items: dict[int, dict[str, Any]] = {}
        self.next_id = 100
        self.build_work_items: dict[int, list[int]] = {}
        self.push_commits: dict[int, list[str]] = {}  # newest first, as Azure DevOps lists them
        self.commit_changes: dict[str, list[dict[str, Any]]] = {}
        self.files: dict[tuple[str, str], str] = {}  # (path, commit) -> content

    # -- what people do in Azure DevOps --

    def move(self, work_item_id: int, state: str, by: str = "Dana Example") -> dict[str, Any]:
        """A person moves a work item; returns the `workitem.updated` notification Azure DevOps sends."""
        with self.lock:
            item = self.work_items[work_item_id]
            old = item["fields"].get("System.State", "New")
            item["fields"]["System.State"] = state
            item["rev"] += 1
            return {
                "id": f"evt-{work_item_id}-{item['rev']}",
                "eventType": "workitem.updated",
                "publisherId": "tfs",
                "message": {"text": f"Work item {work_item_id} updated by {by}"},
                "resource": {
                    "id": item["rev"],
                    "workItemId": work_item_id,
                    "rev": item["rev"],
                    "revisedBy": {"displayName": by, "uniqueName": f"{by.split()[0].lower()}@example.com"},
                    "fields": {"System.State": {"oldValue": old, "newValue": state}},
                    "revision": {"id": work_item_id, "rev": item["rev"], "fields": dict(item["fields"])},
                },
                "resourceContainers": {"project": {"id": "p0000000-0000-0000-0000-000000000001"}},
                "createdDate": datetime.now(UTC).isoformat(),
            }

    # -- routes --

    def route(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], doc: Any) -> Answer:
        if self.pat:
            import base64

            expected = "Basic " + base64.b64encode(f":{self.pat}".encode()).decode()
            if headers.get("authorization") != expected:
                return 203, {"Content-Type": "text/html"}, b"<html><body>Sign in to your account</body></html>"
        if query.get("api-version") != "7.1":
            return _json(400, {"message": "VS403525: The api-version query parameter is required (7.1)."})
        prefix = f"/{self.org}/{self.project}/_apis/"
        if not path.startswith(prefix):
            return _json(404, {"message": f"TF200016: The following project does not exist: {path.split('/')[2]}."})
        rest = path[len(prefix) :]
        if m := re.fullmatch(r"wit/workitems/\$(.+)", rest):
            if method != "POST":
                return _json(405, {"message": "method not allowed"})
            return self._create(m.group(1), doc, headers)
        if m := re.fullmatch(r"wit/workitems/(\d+)", rest):
            item = self.work_items.get(int(m.group(1)))
            if item is None:
                return _json(404, _tf401232(int(m.group(1))))
            if method == "GET":
                return _json(200, self._view(item, relations=query.get("$expand") == "relations"))
            if method == "PATCH":
                return self._patch(item, doc, headers)
        if rest == "wit/workitems" and method == "GET":
            ids = [int(i) for i in query.get("ids", "").split(",") if i]
            if len(ids) > 200:
                return _json(400, {"message": "VS402337: The number of work items requested exceeds the limit of 200."})
            return _json(
                200, {"count": len(ids), "value": [self._view(self.work_items[i]) for i in ids if i in self.work_items]}
            )
        if rest == "wit/wiql" and method == "POST":
            tag = re.search(r"\[System\.Tags\]\s+CONTAINS\s+'((?:[^']|'')*)'", (doc or {}).get("query", ""))
            if not tag:
                return _json(400, {"message": "TF51005: The query references a field that does not exist."})
            wanted = tag.group(1).replace("''", "'").lower()
            found = [
                {"id": i, "url": ""}
                for i, w in sorted(self.work_items.items())
                if wanted in [t.strip().lower() for t in str(w["fields"].get("System.Tags", "")).split(";")]
            ]
            return _json(200, {"queryType": "flat", "workItems": found})
        if m := re.fullmatch(r"build/builds/(\d+)/workitems", rest):
            linked = self.build_work_items.get(int(m.group(1)))
            if linked is None:
                return _json(404, {"message": f"TF215076: Build {m.group(1)} does not exist."})
            return _json(200, {"count": len(linked), "value": [{"id": str(i), "url": ""} for i in linked]})
        if m := re.fullmatch(r"git/repositories/([^/]+)/commits", rest):
            commits = self.push_commits.get(int(query.get("pushId") or -1), [])
            return _json(200, {"count": len(commits), "value": [{"commitId": c} for c in commits]})
        if m := re.fullmatch(r"git/repositories/([^/]+)/commits/([0-9a-f]+)/changes", rest):
            changes = self.commit_changes.get(m.group(2))
            if changes is None:
                return _json(
                    404, {"message": f"TF401175: The version descriptor <Commit: {m.group(2)}> could not be resolved."}
                )
            return _json(200, {"changeCounts": {}, "changes": changes})
        if m := re.fullmatch(r"git/repositories/([^/]+)/items", rest):
            key = (query.get("path", ""), query.get("versionDescriptor.version", ""))
            if key not in self.files:
                return _json(404, {"message": f"TF401174: The item '{key[0]}' could not be found in the repository."})
            return _json(200, {"path": key[0], "commitId": key[1], "content": self.files[key]})
        return _json(404, {"message": f"no route for {method} {path}"})

    def _check_patch(self, doc: Any, headers: dict[str, str]) -> Answer | None:
        if not headers.get("content-type", "").startswith("application/json-patch+json"):
            return _json(415, {"message": "VS402333: Content-Type must be application/json-patch+json."})
        if not isinstance(doc, list):
            return _json(400, {"message": "VS403336: You must pass a valid patch document in the body of the request."})
        for op in doc:
            field_path = str(op.get("path", ""))
            if field_path.startswith("/fields/") and field_path[8:] not in KNOWN_FIELDS:
                return _json(400, {"message": f"TF51535: Cannot find field {field_path[8:]}."})
        return None

    def _apply(self, item: dict[str, Any], ops: list[dict[str, Any]]) -> None:
        for op in ops:
            p = op["path"]
            if p.startswith("/fields/"):
                item["fields"][p[8:]] = op["value"]
            elif p == "/relations/-":
                item["relations"].append(op["value"])

    def _create(self, work_item_type: str, doc: Any, headers: dict[str, str]) -> Answer:
        if (bad := self._check_patch(doc, headers)) is not None:
            return bad
        if work_item_type not in ("Feature", "Epic", "User Story"):
            return _json(404, {"message": f"VS402323: Work item type {work_item_type} does not exist in project."})
        self.next_id += 1
        item: dict[str, Any] = {
            "id": self.next_id,
            "rev": 1,
            "fields": {"System.WorkItemType": work_item_type, "System.State": "New"},
            "relations": [],
        }
        self._apply(item, doc)
        self.work_items[self.next_id] = item
        return _json(200, self._view(item, relations=True))

    def _patch(self, item: dict[str, Any], doc: Any, headers: dict[str, str]) -> Answer:
        if (bad := self._check_patch(doc, headers)) is not None:
            return bad
        self._apply(item, doc)
        item["rev"] += 1
        return _json(200, self._view(item, relations=True))

    def _view(self, item: dict[str, Any], *, relations: bool = False) -> dict[str, Any]:
        out = {"id": item["id"], "rev": item["rev"], "fields": dict(item["fields"])}
        if relations and item["relations"]:
            out["relations"] = list(item["relations"])
        return out


def _tf401232(work_item_id: int) -> dict[str, Any]:
    return {
        "message": f"TF401232: Work item {work_item_id} does not exist, or you do not have permissions to read it.",
        "typeKey": "WorkItemUnauthorizedAccessException",
    }


# ------------------------------------------------------------------------------------------------


class FakeServiceNow(FakePeer):
    """The demand table; records hold display values (`state` "Approved", `approval` "approved")."""

    def __init__(self, table: str = "dmn_demand", *, username: str = "", password: str = "") -> None:
        super().__init__()
        self.table = table
        self.username = username
        self.password = password
        self.records: dict[str, dict[str, Any]] = {}
        self.journal: dict[str, list[str]] = {}

    def add_demand(self, sys_id: str, number: str, title: str, **fields: Any) -> dict[str, Any]:
        record = {
            "sys_id": sys_id,
            "number": number,
            "short_description": title,
            "state": "Approved",
            "approval": "approved",
            "sys_updated_on": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            **fields,
        }
        with self.lock:
            self.records[sys_id] = record
        return record

    def notes(self, sys_id: str) -> list[str]:
        with self.lock:
            return list(self.journal.get(sys_id, []))

    def route(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], doc: Any) -> Answer:
        if self.username:
            import base64

            expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if headers.get("authorization") != expected:
                return _json(
                    401,
                    {
                        "error": {
                            "message": "User Not Authenticated",
                            "detail": "Required to provide Auth information",
                        },
                        "status": "failure",
                    },
                )
        prefix = f"/api/now/table/{self.table}"
        if not path.startswith(prefix):
            return _json(400, {"error": {"message": "Invalid table", "detail": path}, "status": "failure"})
        rest = path[len(prefix) :].strip("/")
        display_all = query.get("sysparm_display_value") == "all"
        fields = [f for f in query.get("sysparm_fields", "").split(",") if f]
        if rest and method == "PATCH":
            record = self.records.get(rest)
            if record is None:
                return _json(
                    404,
                    {
                        "error": {
                            "message": "No Record found",
                            "detail": "Record doesn't exist or ACL restricts the record retrieval",
                        },
                        "status": "failure",
                    },
                )
            for key, value in (doc or {}).items():
                if key == "work_notes":
                    self.journal.setdefault(rest, []).append(str(value))
                else:
                    record[key] = value
            record["sys_updated_on"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
            return _json(200, {"result": self._view(record, fields, display_all)})
        if rest and method == "GET":
            record = self.records.get(rest)
            if record is None:
                return _json(404, {"error": {"message": "No Record found", "detail": ""}, "status": "failure"})
            return _json(200, {"result": self._view(record, fields, display_all)})
        if not rest and method == "GET":
            rows = [r for r in self.records.values() if self._matches(r, query.get("sysparm_query", ""))]
            rows.sort(key=lambda r: (r.get("sys_updated_on", ""), r["number"]))
            offset = int(query.get("sysparm_offset") or 0)
            limit = int(query.get("sysparm_limit") or 10000)
            return _json(200, {"result": [self._view(r, fields, display_all) for r in rows[offset : offset + limit]]})
        return _json(405, {"error": {"message": "Method not Supported"}, "status": "failure"})

    def _matches(self, record: dict[str, Any], query: str) -> bool:
        for part in [p for p in query.split("^") if p and not p.startswith("ORDERBY")]:
            m = re.fullmatch(r"(\w+)>=javascript:gs\.dateGenerate\('([\d-]+)','([\d:]+)'\)", part)
            if m:
                if m.group(1) in record and str(record[m.group(1)]) < f"{m.group(2)} {m.group(3)}":
                    return False
                continue
            name, sep, value = part.partition("=")
            if not sep or name not in record:
                continue  # ServiceNow ignores a query part naming an unknown field
            if str(record[name]).lower() != value.lower():
                return False
        return True

    def _view(self, record: dict[str, Any], fields: list[str], display_all: bool) -> dict[str, Any]:
        chosen = {k: v for k, v in record.items() if not fields or k in fields}
        if display_all:
            return {k: {"value": v, "display_value": v} for k, v in chosen.items()}
        return chosen


# ------------------------------------------------------------------------------------------------


class FakeBackstage(FakePeer):
    def __init__(self, token: str = "") -> None:
        super().__init__()
        self.token = token
        self.entities: set[str] = set()
        self.locations: list[str] = []
        self.refreshed: list[str] = []

    def route(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], doc: Any) -> Answer:
        if self.token and headers.get("authorization") != f"Bearer {self.token}":
            return _json(401, {"error": {"name": "AuthenticationError", "message": "Missing credentials"}})
        if method == "POST" and path == "/api/catalog/refresh":
            ref = str((doc or {}).get("entityRef") or "")
            if ref not in self.entities:
                return _json(404, {"error": {"name": "NotFoundError", "message": f"Entity '{ref}' not found"}})
            self.refreshed.append(ref)
            return 200, {}, b""
        if method == "POST" and path == "/api/catalog/locations":
            target = str((doc or {}).get("target") or "")
            if (doc or {}).get("type") != "url" or not target:
                return _json(400, {"error": {"name": "InputError", "message": "type and target are required"}})
            if target in self.locations:
                return _json(
                    409, {"error": {"name": "ConflictError", "message": f"Location url:{target} already exists"}}
                )
            self.locations.append(target)
            return _json(
                201, {"location": {"id": f"loc-{len(self.locations)}", "type": "url", "target": target}, "entities": []}
            )
        return _json(404, {"error": {"name": "NotFoundError", "message": f"no route for {method} {path}"}})
