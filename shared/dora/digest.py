"""The weekly DORA digest per squad: pure card content from metrics, and the run that enqueues one
`digest` Alert per squad on the alert pipeline (Teams through the squad's route; never an incident).

A digest covers the last complete ISO week (Monday-Sunday) and compares it with the 4 weeks before
it and with the platform's targets; it lists the deployments that failed and the problem that failed
each. One digest per squad and week (`Idempotency.once`, scope `dora-digests`): a rerun of the timer
sends nothing new; a squad's digest that another run holds makes the run fail with a retry after
that run's lease (the timer's retry policy), so a crashed run's digests still go out.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from shared.dora.metrics import parse_window
from shared.dora.rules import TARGETS, meets_target
from shared.errors import TransientUpstreamError
from shared.idempotency import Scope

if TYPE_CHECKING:
    from shared.runtime import Runtime

log = logging.getLogger(__name__)

MAX_FAILED_LISTED = 10
UNMAPPED = "(unmapped)"
# one partition named after the scope, as the records written before `once` (a few rows a week); enqueueing
# a digest takes milliseconds, so a short lease lets the timer's retry take over a crashed run's squads soon
DIGEST_SCOPE = Scope("dora-digests", lease=timedelta(minutes=2), expires_after=timedelta(days=60), spread=1)


def digest_week(today: date) -> tuple[date, date]:
    """(Monday, Sunday) of the last complete ISO week before `today`."""
    monday = today - timedelta(days=today.weekday() + 7)
    return monday, monday + timedelta(days=6)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _hours(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 60:.0f} min" if value < 1 else f"{value:.1f} h"


def _mark(metric: str, value: float | None) -> str:
    ok = meets_target(metric, value)
    op, bound = TARGETS[metric]
    shown = {
        "deploymentsPerDay": f"{bound:g}/day",
        "leadTimeHours": f"{bound:g} h",
        "changeFailureRate": f"{bound * 100:g}%",
        "timeToRestoreHours": f"{bound:g} h",
    }[metric]
    verdict = "no data" if ok is None else "met" if ok else "missed"
    return f"target {op} {shown}: {verdict}"


def _trend(now: float | None, before: float | None, *, lower_is_better: bool) -> str:
    if now is None or before is None:
        return "no trend"
    if abs(now - before) < 1e-9:
        return "flat vs last 4 weeks"
    better = (now < before) if lower_is_better else (now > before)
    arrow = "↓" if now < before else "↑"
    return f"{arrow} vs last 4 weeks ({'better' if better else 'worse'})"


def digest_alert_fields(
    squad: str,
    week: tuple[date, date],
    current: dict[str, Any] | None,
    previous: dict[str, Any] | None,
    failed: list[dict[str, Any]],
) -> dict[str, Any]:
    """The `Alert` fields of one squad's digest (kind `digest`, info or warning, no incident)."""
    cur = current or {}
    prev = previous or {}
    per_day = cur.get("deploymentsPerDay")
    lead = (cur.get("leadTimeHours") or {}).get("median")
    cfr = cur.get("changeFailureRate")
    restore = (cur.get("timeToRestoreHours") or {}).get("median")
    prev_lead = (prev.get("leadTimeHours") or {}).get("median")
    prev_restore = (prev.get("timeToRestoreHours") or {}).get("median")
    deployments = int(cur.get("deployments") or 0)
    facts = [
        ("Level", str(cur.get("level") or "n/a")),
        (
            "Deployment frequency",
            f"{deployments} production deployments ({per_day or 0:.2f}/day); "
            f"{_trend(per_day, prev.get('deploymentsPerDay'), lower_is_better=False)}; {_mark('deploymentsPerDay', per_day)}",
        ),
        (
            "Lead time for changes",
            f"median {_hours(lead)}, p90 {_hours((cur.get('leadTimeHours') or {}).get('p90'))}; "
            f"{_trend(lead, prev_lead, lower_is_better=True)}; {_mark('leadTimeHours', lead)}",
        ),
        (
            "Change failure rate",
            f"{_pct(cfr)} ({cur.get('failedDeployments') or 0} of {deployments}); "
            f"{_trend(cfr, prev.get('changeFailureRate'), lower_is_better=True)}; {_mark('changeFailureRate', cfr)}",
        ),
        (
            "Time to restore",
            f"median {_hours(restore)}; {_trend(restore, prev_restore, lower_is_better=True)}; "
            f"{_mark('timeToRestoreHours', restore)}",
        ),
    ]
    links: list[tuple[str, str]] = []
    for f in failed[:MAX_FAILED_LISTED]:
        problem = f["problem"]
        facts.append(
            (
                f"Failed: {f['service']} {f['finishedAt']}",
                f"P1 {problem['id']} '{(problem.get('title') or '')[:120]}' started "
                f"{problem['minutesAfterDeploy']:.0f} min after the deployment ({f['deployId']})",
            )
        )
        if problem.get("url") and len(links) < 9:
            links.append((f"Problem {problem['id']}"[:80], problem["url"]))
    if len(failed) > MAX_FAILED_LISTED:
        facts.append(("More failed deployments", f"{len(failed) - MAX_FAILED_LISTED} more: `dora failed-deploys`"))
    missed = [
        m for m, v in (("changeFailureRate", cfr), ("timeToRestoreHours", restore)) if meets_target(m, v) is False
    ]
    start, end = week
    return {
        "kind": "digest",
        "severity": "warning" if missed else "info",
        "title": f"DORA weekly digest · {squad} · {start.isoformat()} to {end.isoformat()}",
        "resource_id": f"dora:squad:{squad}",
        "owner": "" if squad == UNMAPPED else squad,
        "facts": tuple(facts),
        "links": tuple(links),
        "dedupe_key": f"dora-digest:{squad}:{start.isoformat()}",
        "incident": False,
        "summary": (
            f"{deployments} production deployments, {cur.get('failedDeployments') or 0} failed by the platform's rule "
            "(a P1 problem on the same service within 60 minutes)."
        ),
    }


def send_digests(runtime: Runtime, *, today: date | None = None) -> dict[str, Any]:
    """Enqueue one digest Alert per squad with data (or a mapped service) for the last complete week.

    TransientUpstreamError (with `retry_after` = the longest lease left) after the other squads when
    another run holds a squad's digest: the retry sends it if that run crashed, and nothing if it finished."""
    from shared.alerts.delivery import enqueue_alert
    from shared.alerts.model import Alert
    from shared.dora import store
    from shared.dora.service import prepare

    day = today or datetime.now(UTC).date()
    week = digest_week(day)
    window = parse_window(week[0].isoformat(), week[1].isoformat())
    before = parse_window((week[0] - timedelta(days=28)).isoformat(), (week[0] - timedelta(days=1)).isoformat())
    with runtime.warehouse.session() as wh:
        prepare(runtime, wh)
        current = {e["squad"]: e for e in store.squad_metrics(wh, window, today=day)["squads"]}
        previous = {e["squad"]: e for e in store.squad_metrics(wh, before, today=day)["squads"]}
        squads = sorted(set(current) | set(store.load_service_map(wh).squads()))
        failed = {s: store.failed_deploys(wh, window, squad=s, limit=50) for s in squads}

    def enqueue(squad: str, fields: dict[str, Any]) -> dict[str, Any]:
        enqueue_alert(runtime.storage, Alert(**fields))
        return {"squad": squad}

    sent, skipped = 0, 0
    busy: dict[str, float] = {}  # squad -> seconds left on the other run's lease
    for squad in squads:
        fields = digest_alert_fields(squad, week, current.get(squad), previous.get(squad), failed.get(squad, []))
        outcome = runtime.idempotency.once(DIGEST_SCOPE, fields["dedupe_key"], partial(enqueue, squad, fields))
        if outcome.busy:
            busy[squad] = outcome.retry_after
        elif outcome.ran:
            sent += 1
        else:
            skipped += 1
    report = {"week": week[0].isoformat(), "squads": len(squads), "sent": sent, "skipped": skipped}
    log.info("dora digests", extra={**report, "busy": sorted(busy)})
    if busy:
        raise TransientUpstreamError(
            f"DORA digests of week {week[0].isoformat()} for {', '.join(sorted(busy))} are being sent by another "
            f"run ({sent} sent by this one); retrying after its lease",
            retry_after=max(1.0, *busy.values()),
        )
    return report
