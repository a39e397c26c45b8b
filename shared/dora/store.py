"""DORA tables and views in the warehouse: idempotent writes, the metrics queries, the identity mapping.

Adapter code: takes an open `WarehouseSession` and plain data (`Deployment`, `Problem`, `ServiceMap`).
Writes are one MERGE per id inside the caller's transaction, so a batch lands whole or not at all and
a redelivered message rewrites the same rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from shared.adapters.warehouse import WarehouseSession
from shared.dora.metrics import Window, service_entry
from shared.dora.model import Deployment, Problem, iso
from shared.dora.services import ServiceMap

# A batch is bulk-loaded into a *_STAGE table under its own BATCH_ID, then folded in with one UPDATE and
# one INSERT-if-absent per table, all in the caller's transaction. (Not MERGE: the embedded warehouse cannot
# run MERGE inside a transaction. In Snowflake the UPDATE locks the table, so concurrent batches carrying
# the same id serialize and the second one updates.)
_DEPLOY_COLUMNS = (
    "DEPLOY_ID", "SERVICE", "SOURCE_SERVICE", "ENVIRONMENT", "RESULT", "STARTED_AT", "FINISHED_AT", "COMMIT_ID",
    "COMMIT_TIME", "PIPELINE", "RUN_ID", "URL", "REQUESTED_BY", "SOURCE", "EXTRA", "UPDATED_AT",
)  # fmt: skip
_PROBLEM_COLUMNS = (
    "PROBLEM_ID", "PRIORITY", "STATE", "STARTED_AT", "RESOLVED_AT", "TITLE", "URL", "SOURCE", "ROOT_CAUSE",
    "SEVERITY", "EXTRA", "UPDATED_AT",
)  # fmt: skip


def _is_time(column: str) -> bool:
    return column.endswith("_AT") or column.endswith("_TIME")


def _frame(rows: list[tuple[Any, ...]], columns: Sequence[str]) -> Any:
    """A stage frame: times as UTC text (cast back in SQL), everything else as is."""
    import pandas as pd

    index = [i for i, c in enumerate(columns) if _is_time(c)]
    text_rows = [
        tuple(v.strftime("%Y-%m-%d %H:%M:%S.%f") if i in index and v is not None else v for i, v in enumerate(row))
        for row in rows
    ]
    return pd.DataFrame(text_rows, columns=list(columns), dtype=object)


def _from_stage(column: str) -> str:
    return f"CAST(s.{column} AS TIMESTAMP_NTZ)" if _is_time(column) else f"s.{column}"


_DEPLOY_UPDATE = """
UPDATE DEPLOYS t SET
    SERVICE = s.SERVICE, SOURCE_SERVICE = s.SOURCE_SERVICE, ENVIRONMENT = s.ENVIRONMENT, RESULT = s.RESULT,
    STARTED_AT = COALESCE(CAST(s.STARTED_AT AS TIMESTAMP_NTZ), t.STARTED_AT), FINISHED_AT = CAST(s.FINISHED_AT AS TIMESTAMP_NTZ),
    COMMIT_ID = COALESCE(s.COMMIT_ID, t.COMMIT_ID), COMMIT_TIME = COALESCE(CAST(s.COMMIT_TIME AS TIMESTAMP_NTZ), t.COMMIT_TIME),
    PIPELINE = COALESCE(s.PIPELINE, t.PIPELINE), RUN_ID = COALESCE(s.RUN_ID, t.RUN_ID), URL = COALESCE(s.URL, t.URL),
    REQUESTED_BY = COALESCE(s.REQUESTED_BY, t.REQUESTED_BY), SOURCE = s.SOURCE, EXTRA = COALESCE(s.EXTRA, t.EXTRA),
    UPDATED_AT = CAST(s.UPDATED_AT AS TIMESTAMP_NTZ)
FROM DEPLOYS_STAGE s
WHERE s.BATCH_ID = %s AND t.DEPLOY_ID = s.DEPLOY_ID
"""

_DEPLOY_INSERT = f"""
INSERT INTO DEPLOYS ({", ".join(_DEPLOY_COLUMNS)})
SELECT {", ".join(_from_stage(c) for c in _DEPLOY_COLUMNS)} FROM DEPLOYS_STAGE s
WHERE s.BATCH_ID = %s AND NOT EXISTS (SELECT 1 FROM DEPLOYS t WHERE t.DEPLOY_ID = s.DEPLOY_ID)
"""

# order-independent fold: resolved once resolved, highest priority, earliest start, first resolve
_PROBLEM_UPDATE = """
UPDATE PROBLEMS t SET
    PRIORITY = LEAST(t.PRIORITY, s.PRIORITY),
    STATE = IFF(t.STATE = 'resolved' OR s.STATE = 'resolved', 'resolved', 'open'),
    STARTED_AT = LEAST(t.STARTED_AT, CAST(s.STARTED_AT AS TIMESTAMP_NTZ)),
    RESOLVED_AT = COALESCE(LEAST(t.RESOLVED_AT, CAST(s.RESOLVED_AT AS TIMESTAMP_NTZ)), t.RESOLVED_AT, CAST(s.RESOLVED_AT AS TIMESTAMP_NTZ)),
    TITLE = COALESCE(s.TITLE, t.TITLE), URL = COALESCE(s.URL, t.URL), SOURCE = s.SOURCE,
    ROOT_CAUSE = COALESCE(s.ROOT_CAUSE, t.ROOT_CAUSE), SEVERITY = COALESCE(s.SEVERITY, t.SEVERITY),
    EXTRA = COALESCE(s.EXTRA, t.EXTRA), UPDATED_AT = CAST(s.UPDATED_AT AS TIMESTAMP_NTZ)
FROM PROBLEMS_STAGE s
WHERE s.BATCH_ID = %s AND t.PROBLEM_ID = s.PROBLEM_ID
"""

_PROBLEM_INSERT = f"""
INSERT INTO PROBLEMS ({", ".join(_PROBLEM_COLUMNS)})
SELECT {", ".join(_from_stage(c) for c in _PROBLEM_COLUMNS)} FROM PROBLEMS_STAGE s
WHERE s.BATCH_ID = %s AND NOT EXISTS (SELECT 1 FROM PROBLEMS t WHERE t.PROBLEM_ID = s.PROBLEM_ID)
"""

_PROBLEM_SERVICES_INSERT = """
INSERT INTO PROBLEM_SERVICES (PROBLEM_ID, SERVICE)
SELECT DISTINCT s.PROBLEM_ID, s.SERVICE FROM PROBLEM_SERVICES_STAGE s
WHERE s.BATCH_ID = %s
  AND NOT EXISTS (SELECT 1 FROM PROBLEM_SERVICES t WHERE t.PROBLEM_ID = s.PROBLEM_ID AND t.SERVICE = s.SERVICE)
"""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _none(text: str) -> str | None:
    return text or None


def _extra(extra: dict[str, Any]) -> str | None:
    return json.dumps(extra, sort_keys=True, default=str)[:16000] if extra else None


def _fold_deploys(deploys: Iterable[Deployment]) -> list[Deployment]:
    """One per id: the later message wins, optional fields it lacks come from the earlier one."""
    folded: dict[str, Deployment] = {}
    for d in deploys:
        before = folded.get(d.id)
        if before is not None:
            d = replace(
                d,
                started_at=d.started_at or before.started_at,
                commit_id=d.commit_id or before.commit_id,
                commit_time=d.commit_time or before.commit_time,
                pipeline=d.pipeline or before.pipeline,
                run_id=d.run_id or before.run_id,
                url=d.url or before.url,
                requested_by=d.requested_by or before.requested_by,
                extra=d.extra or before.extra,
            )
        folded[d.id] = d
    return list(folded.values())


def write_deployments(
    wh: WarehouseSession, deploys: Iterable[Deployment], services: ServiceMap, *, now: datetime | None = None
) -> int:
    """Upsert deployments by id (service names resolved to their key) in the caller's transaction."""
    stamp = now or _now()
    batch = _fold_deploys(deploys)
    if not batch:
        return 0
    batch_id = uuid.uuid4().hex
    rows = [
        (
            batch_id,
            d.id,
            services.resolve(d.service),
            d.service,
            d.environment,
            d.result,
            d.started_at,
            d.finished_at,
            _none(d.commit_id),
            d.commit_time,
            _none(d.pipeline),
            _none(d.run_id),
            _none(d.url),
            _none(d.requested_by),
            d.source,
            _extra(d.extra),
            stamp,
        )  # fmt: skip
        for d in batch
    ]
    wh.write_frame(_frame(rows, ("BATCH_ID", *_DEPLOY_COLUMNS)), "DEPLOYS_STAGE")
    wh.execute(_DEPLOY_UPDATE, (batch_id,))
    wh.execute(_DEPLOY_INSERT, (batch_id,))
    wh.execute("DELETE FROM DEPLOYS_STAGE WHERE BATCH_ID = %s", (batch_id,))
    return len(batch)


def write_problems(
    wh: WarehouseSession, problems: Iterable[Problem], services: ServiceMap, *, now: datetime | None = None
) -> int:
    """Fold problem messages into their rows (order-independent) and add their services."""
    from shared.dora.metrics import merge_problem

    stamp = now or _now()
    folded: dict[str, Problem] = {}
    for p in problems:
        p = replace(p, services=tuple(dict.fromkeys(services.resolve(s) for s in p.services)))
        folded[p.id] = merge_problem(folded.get(p.id), p)
    if not folded:
        return 0
    batch_id = uuid.uuid4().hex
    rows = [
        (
            batch_id,
            p.id,
            p.priority,
            p.state,
            p.started_at,
            p.resolved_at if p.state == "resolved" else None,
            _none(p.title),
            _none(p.url),
            p.source,
            _none(p.root_cause),
            _none(p.severity),
            _extra(p.extra),
            stamp,
        )  # fmt: skip
        for p in folded.values()
    ]
    pairs = [(batch_id, p.id, name) for p in folded.values() for name in p.services]
    wh.write_frame(_frame(rows, ("BATCH_ID", *_PROBLEM_COLUMNS)), "PROBLEMS_STAGE")
    wh.write_frame(_frame(pairs, ("BATCH_ID", "PROBLEM_ID", "SERVICE")), "PROBLEM_SERVICES_STAGE")
    wh.execute(_PROBLEM_UPDATE, (batch_id,))
    wh.execute(_PROBLEM_INSERT, (batch_id,))
    wh.execute(_PROBLEM_SERVICES_INSERT, (batch_id,))
    for table in ("PROBLEMS_STAGE", "PROBLEM_SERVICES_STAGE"):
        wh.execute(f"DELETE FROM {table} WHERE BATCH_ID = %s", (batch_id,))
    return len(folded)


# -- reference data: production environments and the service map --


def sync_production_environments(wh: WarehouseSession, names: Iterable[str]) -> None:
    wanted = sorted({n.strip().lower() for n in names if n.strip()})
    have = sorted(r["ENVIRONMENT"] for r in wh.query("SELECT ENVIRONMENT FROM DORA_PRODUCTION_ENVIRONMENTS"))
    if have == wanted:
        return
    with wh.transaction():
        wh.execute("DELETE FROM DORA_PRODUCTION_ENVIRONMENTS")
        for name in wanted:
            wh.execute("INSERT INTO DORA_PRODUCTION_ENVIRONMENTS (ENVIRONMENT) VALUES (%s)", (name,))


def replace_service_map(wh: WarehouseSession, mapping: ServiceMap, source: str, *, now: datetime | None = None) -> int:
    """Replace the rows one source (settings, csv, backstage) contributed; returns the services written."""
    stamp = now or _now()
    with wh.transaction():
        wh.execute("DELETE FROM SERVICE_MAP WHERE SOURCE = %s", (source,))
        wh.execute("DELETE FROM SERVICE_ALIASES WHERE SOURCE = %s", (source,))
        for entry in mapping.entries:
            wh.execute(
                "INSERT INTO SERVICE_MAP (SERVICE, SQUAD, COMPONENT, SOURCE, UPDATED_AT) VALUES (%s, %s, %s, %s, %s)",
                (entry.service, _none(entry.squad), _none(entry.component), source, stamp),
            )
            for alias in entry.aliases:
                wh.execute(
                    "INSERT INTO SERVICE_ALIASES (ALIAS, SERVICE, SOURCE) VALUES (%s, %s, %s)",
                    (alias.lower(), entry.service, source),
                )
    return len(mapping.entries)


def load_service_map(wh: WarehouseSession) -> ServiceMap:
    """Every source's mapping merged (settings first, then csv, then backstage fill the gaps)."""
    order = {"settings": 0, "csv": 1, "backstage": 2}
    rows = sorted(
        wh.query("SELECT SERVICE, SQUAD, COMPONENT, SOURCE FROM SERVICE_MAP"),
        key=lambda r: (order.get(r["SOURCE"], 9), r["SERVICE"]),
    )
    aliases = sorted(
        wh.query("SELECT ALIAS, SERVICE, SOURCE FROM SERVICE_ALIASES"),
        key=lambda r: (order.get(r["SOURCE"], 9), r["ALIAS"]),
    )
    return ServiceMap.from_rows(rows, aliases)


# -- reads --


def _window_sql(column: str, window: Window) -> tuple[str, list[Any]]:
    parts, params = [], []
    if window.start is not None:
        parts.append(f"{column} >= %s")
        params.append(window.start)
    if window.end is not None:
        parts.append(f"{column} {'<=' if window.end_inclusive else '<'} %s")
        params.append(window.end)
    return " AND ".join(parts) or "TRUE", params


def _scope_sql(service: str | None, squad: str | None) -> tuple[str, list[Any]]:
    parts, params = [], []
    if service:
        parts.append("SERVICE = %s")
        params.append(service)
    if squad:
        parts.append("LOWER(SQUAD) = LOWER(%s)")
        params.append(squad)
    return " AND ".join(parts) or "TRUE", params


def first_event(wh: WarehouseSession, service: str | None, squad: str | None) -> datetime | None:
    scope, params = _scope_sql(service, squad)
    rows = wh.query(
        f"SELECT MIN(T) AS FIRST FROM (SELECT FINISHED_AT AS T FROM DORA_PROD_DEPLOYS WHERE {scope} "
        f"UNION ALL SELECT STARTED_AT AS T FROM DORA_RESTORES WHERE {scope})",
        params + params,
    )
    return rows[0]["FIRST"] if rows and rows[0]["FIRST"] is not None else None


def metrics(
    wh: WarehouseSession,
    window: Window,
    *,
    service: str | None = None,
    squad: str | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """The `GET /api/dora/metrics` document, computed by the warehouse views."""
    bounded = window.bounded(first_event(wh, service, squad), today or datetime.now(UTC).date())
    scope, scope_params = _scope_sql(service, squad)
    dep_where, dep_params = _window_sql("FINISHED_AT", bounded)
    res_where, res_params = _window_sql("STARTED_AT", bounded)
    deploy_rows = wh.query(
        "SELECT SERVICE, COUNT(*) AS N, COUNT_IF(FAILED) AS FAILED, MEDIAN(LEAD_TIME_HOURS) AS LEAD_MEDIAN, "
        "PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY LEAD_TIME_HOURS) AS LEAD_P90 "
        f"FROM DORA_DEPLOY_OUTCOMES WHERE {dep_where} AND {scope} GROUP BY SERVICE",
        dep_params + scope_params,
    )
    restore_rows = wh.query(
        "SELECT SERVICE, MEDIAN(RESTORE_HOURS) AS RESTORE_MEDIAN "
        f"FROM DORA_RESTORES WHERE {res_where} AND {scope} GROUP BY SERVICE",
        res_params + scope_params,
    )
    stats: dict[str, dict[str, Any]] = {}
    for r in deploy_rows:
        stats[r["SERVICE"]] = {
            "n": int(r["N"]),
            "failed": int(r["FAILED"]),
            "lm": r["LEAD_MEDIAN"],
            "lp": r["LEAD_P90"],
        }
    restore = {r["SERVICE"]: r["RESTORE_MEDIAN"] for r in restore_rows}
    names = set(stats) | set(restore)
    if service:
        names.add(service)
    if squad:
        names |= {
            r["SERVICE"]
            for r in wh.query("SELECT DISTINCT SERVICE FROM SERVICE_MAP WHERE LOWER(SQUAD) = LOWER(%s)", (squad,))
        }
    days = bounded.days()
    services = []
    for name in sorted(names):
        s = stats.get(name, {"n": 0, "failed": 0, "lm": None, "lp": None})
        services.append(service_entry(name, s["n"], s["failed"], _f(s["lm"]), _f(s["lp"]), _f(restore.get(name)), days))
    return {"from": bounded.label_from, "to": bounded.label_to, "services": services}


def failed_deploys(
    wh: WarehouseSession,
    window: Window,
    *,
    service: str | None = None,
    squad: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """The deployments that failed under the rule, each with the problem that failed it, newest first."""
    scope, scope_params = _scope_sql(service, squad)
    where, params = _window_sql("FINISHED_AT", window)
    rows = wh.query(
        "SELECT DEPLOY_ID, SERVICE, SQUAD, FINISHED_AT, DEPLOY_URL, COMMIT_ID, PROBLEM_ID, PROBLEM_STARTED_AT, "
        "MINUTES_AFTER_DEPLOY, PROBLEM_TITLE, PROBLEM_URL, PROBLEM_STATE "
        f"FROM DORA_FAILED_DEPLOYS WHERE {where} AND {scope} "
        f"ORDER BY FINISHED_AT DESC, DEPLOY_ID, PROBLEM_STARTED_AT LIMIT {int(limit)}",
        params + scope_params,
    )
    return [
        {
            "deployId": r["DEPLOY_ID"],
            "service": r["SERVICE"],
            "squad": r["SQUAD"],
            "finishedAt": iso(r["FINISHED_AT"]),
            "url": r["DEPLOY_URL"],
            "commitId": r["COMMIT_ID"],
            "problem": {
                "id": r["PROBLEM_ID"],
                "startedAt": iso(r["PROBLEM_STARTED_AT"]),
                "minutesAfterDeploy": round(float(r["MINUTES_AFTER_DEPLOY"]), 3),
                "title": r["PROBLEM_TITLE"],
                "url": r["PROBLEM_URL"],
                "state": r["PROBLEM_STATE"],
            },
        }
        for r in rows
    ]


def unresolved_p1(wh: WarehouseSession, services: Sequence[str]) -> dict[str, int]:
    """Open P1 problems per service (for badges and the scorecard)."""
    if not services:
        return {}
    marks = ", ".join(["%s"] * len(services))
    rows = wh.query(
        f"SELECT SERVICE, COUNT(*) AS N FROM DORA_RESTORES WHERE STATE <> 'resolved' AND SERVICE IN ({marks}) "
        "GROUP BY SERVICE",
        list(services),
    )
    return {r["SERVICE"]: int(r["N"]) for r in rows}


def deploys_without_commit_time(wh: WarehouseSession, limit: int = 500) -> list[dict[str, Any]]:
    return wh.query(
        "SELECT DEPLOY_ID, COMMIT_ID, EXTRA FROM DEPLOYS WHERE COMMIT_TIME IS NULL AND COMMIT_ID IS NOT NULL "
        f"ORDER BY FINISHED_AT DESC LIMIT {int(limit)}"
    )


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def squad_metrics(wh: WarehouseSession, window: Window, *, today: date | None = None) -> dict[str, Any]:
    """The metrics per squad (every service of the squad together); a problem counts once per squad."""
    bounded = window.bounded(first_event(wh, None, None), today or datetime.now(UTC).date())
    dep_where, dep_params = _window_sql("FINISHED_AT", bounded)
    res_where, res_params = _window_sql("STARTED_AT", bounded)
    deploy_rows = wh.query(
        "SELECT SQUAD, COUNT(*) AS N, COUNT_IF(FAILED) AS FAILED, MEDIAN(LEAD_TIME_HOURS) AS LEAD_MEDIAN, "
        "PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY LEAD_TIME_HOURS) AS LEAD_P90 "
        f"FROM DORA_DEPLOY_OUTCOMES WHERE {dep_where} GROUP BY SQUAD",
        dep_params,
    )
    restore_rows = wh.query(
        "SELECT SQUAD, MEDIAN(RESTORE_HOURS) AS RESTORE_MEDIAN, COUNT_IF(STATE <> 'resolved') AS OPEN_P1 FROM "
        "(SELECT DISTINCT PROBLEM_ID, SQUAD, RESTORE_HOURS, STATE FROM DORA_RESTORES "
        f"WHERE {res_where}) GROUP BY SQUAD",
        res_params,
    )
    stats = {r["SQUAD"]: r for r in deploy_rows}
    restores = {r["SQUAD"]: r for r in restore_rows}
    days = bounded.days()
    squads = []
    for name in sorted(set(stats) | set(restores)):
        s, r = stats.get(name) or {}, restores.get(name) or {}
        entry = service_entry(
            name,
            int(s.get("N") or 0),
            int(s.get("FAILED") or 0),
            _f(s.get("LEAD_MEDIAN")),
            _f(s.get("LEAD_P90")),
            _f(r.get("RESTORE_MEDIAN")),
            days,
        )
        entry["squad"] = entry.pop("service")
        entry["unresolvedP1"] = int(r.get("OPEN_P1") or 0)
        squads.append(entry)
    return {"from": bounded.label_from, "to": bounded.label_to, "squads": squads}
