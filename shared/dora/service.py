"""DORA orchestration: what the functions and the CLI call. Adapters come from the `Runtime`.

- HTTP: `accept_deployments`, `accept_problems` validate the whole body (a precise 400, nothing
  queued), then queue it on `dora-events` as one message (a blob when large) and answer 202.
- Queue: `handle_queue_message` writes a message into DEPLOYS / PROBLEMS in one transaction; Azure DevOps
  events arrive through the shared hook (`handle_ado_event`, registered in shared/dora/ado_events.py).
- Reads: `metrics`, `failed`, `leaderboard`, `scorecard`; the weekly `send_digests`.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.adapters.warehouse import WarehouseSession
from shared.dora import store
from shared.dora.metrics import Window, parse_window
from shared.dora.model import Deployment, Problem, parse_deployments, parse_problems
from shared.dora.problems import parse_problem_payload
from shared.dora.rules import BADGES, TARGETS, badges_for, meets_target, parse_priority_rules
from shared.dora.services import ServiceMap, load_service_map_setting, require_entity_ref
from shared.errors import BadInputError, NotFoundError, PayloadTooLargeError, UnauthorizedError

if TYPE_CHECKING:
    from shared.runtime import Runtime
    from shared.settings import Settings

log = logging.getLogger(__name__)

QUEUE = "dora-events"
PAYLOAD_CONTAINER = "dora-events"
INLINE_LIMIT = 40_000
MAX_BODY = 10 * 1024 * 1024
SECRET_HEADER = "X-Webhook-Secret"
DEFAULT_DAYS = 28


# -- HTTP side --


def _json_body(body: bytes) -> Any:
    if not body:
        raise BadInputError("empty body: expected a JSON object or an array of objects")
    if len(body) > MAX_BODY:
        raise PayloadTooLargeError(f"body of {len(body)} bytes; the limit is {MAX_BODY}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadInputError(f"body is not valid JSON ({str(exc)[:120]})") from None


def _enqueue(runtime: Runtime, kind: str, items: list[dict[str, Any]]) -> str:
    """One message for the whole batch (all-or-nothing when the worker writes it)."""
    message: dict[str, Any] = {"kind": kind, "receivedAt": datetime.now(UTC).isoformat()}
    text = json.dumps(items, separators=(",", ":"), default=str)
    if len(text) <= INLINE_LIMIT:
        message["items"] = items
    else:
        blob = f"{kind}/{datetime.now(UTC):%Y%m%d}/{uuid.uuid4().hex}.json"
        runtime.storage.put_blob(PAYLOAD_CONTAINER, blob, text.encode(), overwrite=True)
        message["itemsBlob"] = blob
    return runtime.storage.send(QUEUE, message)


def accept_deployments(runtime: Runtime, body: bytes) -> dict[str, Any]:
    """Validate a `POST /api/dora/deployments` body and queue it; the 202 document."""
    deploys = parse_deployments(_json_body(body))
    _enqueue(runtime, "deployments", [d.to_json() for d in deploys])
    return {"accepted": len(deploys), "ids": [d.id for d in deploys]}


def authenticate_problem_sender(headers: Mapping[str, str], settings: Settings) -> None:
    """`X-Webhook-Secret` must equal DYNATRACE_WEBHOOK_SECRET (constant time) when one is set."""
    expected = settings.dynatrace_webhook_secret
    if not expected:
        return
    sent = {k.lower(): v for k, v in headers.items()}.get(SECRET_HEADER.lower(), "")
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise UnauthorizedError(
            f"webhook secret missing or wrong: send the header '{SECRET_HEADER}: <DYNATRACE_WEBHOOK_SECRET>'"
        )


def accept_problems(runtime: Runtime, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """Authenticate, map (Dynatrace, ServiceNow or generic) and queue a `POST /api/dora/problems` body."""
    settings = runtime.settings
    authenticate_problem_sender(headers, settings)
    rules = parse_priority_rules(settings.dora_priority_rules)
    problems = parse_problem_payload(_json_body(body), rules, settings.dora_production_environments)
    _enqueue(runtime, "problems", [problem_message(p) for p in problems])
    return {
        "accepted": len(problems),
        "problems": [
            {"id": p.id, "priority": p.priority, "state": p.state, "services": list(p.services)} for p in problems
        ],
    }


def problem_message(p: Problem) -> dict[str, Any]:
    doc = p.to_json()
    doc["resolvedAt"] = doc["resolvedAt"] if p.state == "resolved" else None
    return doc


def problem_from_message(doc: dict[str, Any]) -> Problem:
    problem = parse_problems(doc)[0]
    extra = {k: v for k, v in problem.extra.items() if k not in ("rootCause", "severity")}
    return replace(
        problem, root_cause=str(doc.get("rootCause") or ""), severity=str(doc.get("severity") or ""), extra=extra
    )


# -- queue side --


_prepared: set[str] = set()
_prepared_lock = threading.Lock()


def prepare(runtime: Runtime, wh: WarehouseSession) -> None:
    """Bring the warehouse's copy of the settings (production names, DORA_SERVICE_MAP) up to date, once per
    process and settings."""
    s = runtime.settings
    key = json.dumps([s.warehouse, s.warehouse_path, s.snowflake_database, s.snowflake_schema,
                      s.dora_production_environments, s.dora_service_map])  # fmt: skip
    with _prepared_lock:
        if key in _prepared:
            return
    store.sync_production_environments(wh, s.dora_production_environments)
    if s.dora_service_map.strip():
        store.replace_service_map(wh, load_service_map_setting(s.dora_service_map), "settings")
    with _prepared_lock:
        _prepared.add(key)


def handle_queue_message(runtime: Runtime, body: bytes | str) -> dict[str, Any]:
    """Write one `dora-events` message into the warehouse (idempotent per id, all-or-nothing)."""
    try:
        message = json.loads(body)
    except ValueError:
        raise BadInputError("dora-events message is not JSON") from None
    if not isinstance(message, dict) or message.get("kind") not in ("deployments", "problems"):
        raise BadInputError("dora-events message needs kind 'deployments' or 'problems'")
    items = message.get("items")
    if items is None:
        blob = message.get("itemsBlob")
        data = runtime.storage.get_blob(PAYLOAD_CONTAINER, str(blob)) if isinstance(blob, str) else None
        if data is None:
            raise BadInputError(f"dora-events message points to blob {blob!r}, which does not exist")
        items = json.loads(data)
    if message["kind"] == "deployments":
        deploys = parse_deployments(items)
        return {"kind": "deployments", "written": write(runtime, deploys=deploys)}
    problems = [problem_from_message(d) for d in items]
    return {"kind": "problems", "written": write(runtime, problems=problems)}


def write(runtime: Runtime, *, deploys: list[Deployment] | None = None, problems: list[Problem] | None = None) -> int:
    """Deployments and problems into the warehouse in one transaction; returns the rows written."""
    with runtime.warehouse.session() as wh:
        prepare(runtime, wh)
        services = store.load_service_map(wh)
        with wh.transaction():
            n = store.write_deployments(wh, deploys or [], services)
            n += store.write_problems(wh, problems or [], services)
    return n


# -- reads --


def _service_param(wh: WarehouseSession, service: str | None) -> str | None:
    if not service or not service.strip():
        return None
    return store.load_service_map(wh).resolve(service)


def metrics(
    runtime: Runtime, *, service: str | None = None, squad: str | None = None,
    from_: str | None = None, to: str | None = None, today: date | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The `GET /api/dora/metrics` document."""
    window = parse_window(from_, to)
    with runtime.warehouse.session() as wh:
        prepare(runtime, wh)
        return store.metrics(wh, window, service=_service_param(wh, service), squad=squad or None, today=today)


def failed(
    runtime: Runtime, *, service: str | None = None, squad: str | None = None,
    from_: str | None = None, to: str | None = None, limit: int = 200,
) -> list[dict[str, Any]]:  # fmt: skip
    window = parse_window(from_, to)
    with runtime.warehouse.session() as wh:
        prepare(runtime, wh)
        return store.failed_deploys(wh, window, service=_service_param(wh, service), squad=squad or None, limit=limit)


def default_window(from_: str | None, to: str | None, today: date, days: int = DEFAULT_DAYS) -> Window:
    """The window asked for, or the last `days` days up to today."""
    if from_ or to:
        return parse_window(from_, to)
    return parse_window((today - timedelta(days=days - 1)).isoformat(), today.isoformat())


def _cost_by_squad(wh: WarehouseSession, start: date, end: date) -> dict[str, float]:
    rows = wh.query(
        "SELECT OWNER, SUM(COST) AS COST FROM COST_DAILY WHERE IS_USAGE AND USAGE_DATE >= %s AND USAGE_DATE <= %s "
        "GROUP BY OWNER",
        (start, end),
    )
    return {str(r["OWNER"] or "").lower(): float(r["COST"] or 0) for r in rows}


def leaderboard(
    runtime: Runtime, *, from_: str | None = None, to: str | None = None, today: date | None = None
) -> dict[str, Any]:
    """Squads ranked by DORA level and badges earned (the adoption program)."""
    day = today or datetime.now(UTC).date()
    window = default_window(from_, to, day)
    with runtime.warehouse.session() as wh:
        prepare(runtime, wh)
        doc = store.squad_metrics(wh, window, today=day)
        start = (window.start or datetime.combine(day, datetime.min.time())).date()
        end_instant = window.end or datetime.combine(day + timedelta(days=1), datetime.min.time())
        end = (end_instant - timedelta(microseconds=1)).date() if not window.end_inclusive else end_instant.date()
        span = (end - start).days + 1
        cost = _cost_by_squad(wh, start, end)
        previous = _cost_by_squad(wh, start - timedelta(days=span), start - timedelta(days=1))
        open_anomalies = {
            str(r["OWNER"] or "").lower(): int(r["N"])
            for r in wh.query("SELECT OWNER, COUNT(*) AS N FROM COST_ANOMALIES WHERE STATUS = 'open' GROUP BY OWNER")
        }
    ranked = []
    level_rank = {"elite": 4, "high": 3, "medium": 2, "low": 1}
    for entry in doc["squads"]:
        squad = entry["squad"]
        entry["cost"] = round(cost[squad], 2) if squad in cost else None
        entry["previousCost"] = round(previous[squad], 2) if squad in previous else None
        entry["openCostAnomalies"] = open_anomalies.get(squad, 0)
        entry["badges"] = badges_for(entry)
        ranked.append(entry)
    ranked.sort(key=lambda e: (-level_rank.get(e["level"] or "", 0), -len(e["badges"]), -e["deployments"], e["squad"]))
    for i, entry in enumerate(ranked, start=1):
        entry["rank"] = i
    return {
        "from": doc["from"],
        "to": doc["to"],
        "squads": ranked,
        "badges": [{"id": b.id, "name": b.name, "rule": b.rule} for b in BADGES],
    }


def scorecard(
    runtime: Runtime,
    entity_ref: str | None,
    *,
    from_: str | None = None,
    to: str | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """A Backstage component's DORA metrics, open policy violations and open cost anomalies with MTD cost."""
    from shared.dora import scorecard as card

    name = require_entity_ref(entity_ref)
    day = today or datetime.now(UTC).date()
    window = default_window(from_, to, day)
    with runtime.warehouse.session() as wh:
        prepare(runtime, wh)
        mapping = store.load_service_map(wh)
        services = mapping.services_of_component(name) or [mapping.resolve(name)]
        dora = [
            entry for service in services for entry in store.metrics(wh, window, service=service, today=day)["services"]
        ]
        resources = card.component_resources(wh, name)
        costs = card.cost_summary(wh, resources, day)
    violations = card.open_violations(runtime.storage, resources)
    if not resources and not any(e["deployments"] for e in dora) and not store_has_service(runtime, services):
        raise NotFoundError(
            f"component {name!r}: no service, deployment or tagged resource is known for it "
            f"(map it in DORA_SERVICE_MAP or tag resources with {runtime.settings.dora_component_tag})"
        )
    return card.document(name, entity_ref or "", window, dora, resources, violations, costs, day)


def store_has_service(runtime: Runtime, services: list[str]) -> bool:
    with runtime.warehouse.session() as wh:
        marks = ", ".join(["%s"] * len(services))
        rows = wh.query(
            f"SELECT COUNT(*) AS N FROM (SELECT SERVICE FROM DEPLOYS WHERE SERVICE IN ({marks}) UNION ALL "
            f"SELECT SERVICE FROM SERVICE_MAP WHERE SERVICE IN ({marks}) UNION ALL "
            f"SELECT SERVICE FROM PROBLEM_SERVICES WHERE SERVICE IN ({marks}))",
            services * 3,
        )
    return bool(rows and int(rows[0]["N"]))


def targets() -> dict[str, Any]:
    return {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()}


def target_status(entry: dict[str, Any]) -> dict[str, bool | None]:
    return {
        "deploymentsPerDay": meets_target("deploymentsPerDay", entry.get("deploymentsPerDay")),
        "leadTimeHours": meets_target("leadTimeHours", (entry.get("leadTimeHours") or {}).get("median")),
        "changeFailureRate": meets_target("changeFailureRate", entry.get("changeFailureRate")),
        "timeToRestoreHours": meets_target("timeToRestoreHours", (entry.get("timeToRestoreHours") or {}).get("median")),
    }


def service_map(runtime: Runtime) -> ServiceMap:
    with runtime.warehouse.session() as wh:
        prepare(runtime, wh)
        return store.load_service_map(wh)


def refresh_and_digest(runtime: Runtime, *, today: date | None = None) -> dict[str, Any]:
    """The weekly timer: refresh the identity map from Backstage and the component tags from ARM (each
    failure logged, never fatal), then send the digests."""
    from shared.dora.digest import send_digests

    report: dict[str, Any] = {}
    if runtime.settings.backstage_url:
        try:
            from shared.dora.backstage import sync_catalog

            report["catalog"] = sync_catalog(runtime)
        except Exception as exc:  # the digest must go out even when the catalog is down
            log.warning("backstage catalog sync failed: %s", getattr(exc, "detail", type(exc).__name__))
    try:
        from shared.adapters.arm import Arm
        from shared.dora.scorecard import sync_component_resources

        report["components"] = sync_component_resources(runtime, Arm.from_settings(runtime.settings), today=today)
    except Exception as exc:
        log.warning("component tag sync failed: %s", getattr(exc, "detail", type(exc).__name__))
    report["digest"] = send_digests(runtime, today=today)
    return report


def backfill(runtime: Runtime, since: datetime, *, batch: int = 200) -> dict[str, Any]:
    """Past pipeline runs since `since` (Azure DevOps builds + timelines) into DEPLOYS; idempotent with the
    hook events (same ids). Commit times are looked up once per commit."""
    from shared.dora.ado_events import devops_client
    from shared.dora.azure_pipelines import backfill_deployments, with_commit_time

    settings = runtime.settings
    client = devops_client(settings)
    seen_commits: dict[str, datetime | None] = {}
    pending: list[Deployment] = []
    report = {"deployments": 0, "production": 0, "withCommitTime": 0}
    prod = {p.lower() for p in settings.dora_production_environments}
    for deploy in backfill_deployments(client, since, settings.dora_production_environments):
        key = f"{deploy.extra.get('repositoryId')}|{deploy.commit_id}"
        if deploy.commit_id and key not in seen_commits:
            seen_commits[key] = with_commit_time(client, deploy).commit_time
        deploy = replace(deploy, commit_time=deploy.commit_time or seen_commits.get(key))
        pending.append(deploy)
        report["deployments"] += 1
        report["production"] += deploy.environment in prod
        report["withCommitTime"] += deploy.commit_time is not None
        if len(pending) >= batch:
            write(runtime, deploys=pending)
            pending = []
    if pending:
        write(runtime, deploys=pending)
    return report
