"""`dora metrics|failed-deploys|leaderboard|backfill|digest|services|components`: the DORA metrics by hand."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from shared.cli.common import cli_runtime as _runtime
from shared.errors import BadInputError


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("dora", help="DORA metrics: deployments, problems, failed deploys, backfill")
    commands = group.add_subparsers(dest="command", metavar="<command>", required=True)

    def window(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--service", help="one service (key or any alias)")
        parser.add_argument("--squad", help="the services of one squad")
        parser.add_argument("--from", dest="start", help="first day YYYY-MM-DD (inclusive) or an ISO timestamp")
        parser.add_argument("--to", dest="end", help="last day YYYY-MM-DD (inclusive) or an ISO timestamp")
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    metrics = commands.add_parser(
        "metrics",
        help="deployment frequency, lead time, change failure rate, time to restore per service",
        description="The same numbers as GET /api/dora/metrics, computed by the warehouse views.",
    )
    window(metrics)
    metrics.set_defaults(handler=cmd_metrics)

    failed = commands.add_parser(
        "failed-deploys",
        help="deployments that failed (a P1 problem on the service within 60 minutes), with the problem",
    )
    window(failed)
    failed.add_argument("--limit", type=int, default=200, help="at most this many (default 200)")
    failed.set_defaults(handler=cmd_failed)

    board = commands.add_parser("leaderboard", help="squads ranked by DORA level and badges (default: last 28 days)")
    board.add_argument("--from", dest="start")
    board.add_argument("--to", dest="end")
    board.add_argument("--json", action="store_true")
    board.set_defaults(handler=cmd_leaderboard)

    backfill = commands.add_parser(
        "backfill",
        help="load past pipeline runs from the Azure DevOps REST API (builds + stage timelines)",
        description="Reads completed runs of AZURE_DEVOPS_PROJECT finished since --since; each stage is a deployment "
        "with the same id a stage event would have, so nothing is counted twice.",
    )
    backfill.add_argument("--since", required=True, type=_since, help="YYYY-MM-DD or an ISO timestamp")
    backfill.set_defaults(handler=cmd_backfill)

    digest = commands.add_parser("digest", help="send the weekly digest per squad now (once per squad and week)")
    digest.add_argument("--today", type=_date, help="pretend today is this date (the digest covers the week before)")
    digest.set_defaults(handler=cmd_digest)

    services = commands.add_parser("services", help="service identity: list, load a CSV, sync the Backstage catalog")
    svc = services.add_subparsers(dest="action", metavar="<action>", required=True)
    svc_list = svc.add_parser("list", help="services, squads, components and aliases known")
    svc_list.add_argument("--json", action="store_true")
    svc_list.set_defaults(handler=cmd_services_list)
    svc_load = svc.add_parser("load", help="replace the CSV-loaded mapping (columns service,squad,component,aliases)")
    svc_load.add_argument("--csv", required=True, type=Path)
    svc_load.set_defaults(handler=cmd_services_load)
    svc_sync = svc.add_parser("sync-catalog", help="read Backstage components (BACKSTAGE_URL) into the mapping")
    svc_sync.set_defaults(handler=cmd_services_sync)

    components = commands.add_parser("components", help="Azure resources of Backstage components (scorecard)")
    comp = components.add_subparsers(dest="action", metavar="<action>", required=True)
    comp_load = comp.add_parser("load", help="replace the CSV-loaded mapping (columns resource_id,component)")
    comp_load.add_argument("--csv", required=True, type=Path)
    comp_load.set_defaults(handler=cmd_components_load)
    comp_sync = comp.add_parser("sync", help="read the DORA_COMPONENT_TAG of resources with cost or violations (ARM)")
    comp_sync.set_defaults(handler=cmd_components_sync)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _since(text: str) -> datetime:
    from shared.dora.model import parse_instant

    if len(text) == 10:
        return datetime.combine(_date(text), datetime.min.time())
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}h"


def cmd_metrics(args: argparse.Namespace) -> int:
    from shared.dora.service import metrics

    doc = metrics(_runtime(), service=args.service, squad=args.squad, from_=args.start, to=args.end)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"DORA metrics {doc['from']} .. {doc['to']}")
    if not doc["services"]:
        print("no production deployments or P1 problems in this window")
        return 0
    print(f"{'service':<28} {'deploys':>7} {'failed':>6} {'CFR':>7} {'per day':>8} {'lead med':>9} {'lead p90':>9} "
          f"{'restore':>8}  level")  # fmt: skip
    for s in doc["services"]:
        cfr = "-" if s["changeFailureRate"] is None else f"{s['changeFailureRate'] * 100:.1f}%"
        print(
            f"{s['service'][:28]:<28} {s['deployments']:>7} {s['failedDeployments']:>6} {cfr:>7} "
            f"{s['deploymentsPerDay'] or 0:>8.2f} {_hours(s['leadTimeHours']['median']):>9} "
            f"{_hours(s['leadTimeHours']['p90']):>9} {_hours(s['timeToRestoreHours']['median']):>8}  {s['level'] or '-'}"
        )
    return 0


def cmd_failed(args: argparse.Namespace) -> int:
    from shared.dora.service import failed

    if args.limit < 1:
        raise BadInputError("--limit must be at least 1")
    items = failed(_runtime(), service=args.service, squad=args.squad, from_=args.start, to=args.end, limit=args.limit)
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    if not items:
        print("no failed deployments in this window")
        return 0
    for f in items:
        p = f["problem"]
        print(
            f"{f['finishedAt']}  {f['service']:<24} {f['deployId']}\n"
            f"    failed by P1 {p['id']} at {p['startedAt']} ({p['minutesAfterDeploy']:.0f} min after): {p['title'] or ''}"
        )
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from shared.dora.service import leaderboard

    doc = leaderboard(_runtime(), from_=args.start, to=args.end)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"Leaderboard {doc['from']} .. {doc['to']}")
    for s in doc["squads"]:
        badges = ", ".join(b["name"] for b in s["badges"]) or "-"
        print(f"{s['rank']:>3}. {s['squad']:<24} level {s['level'] or '-':<7} deploys {s['deployments']:>5}  {badges}")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from shared.dora.service import backfill

    report = backfill(_runtime(), args.since)
    print(json.dumps(report, indent=2))
    return 0


def cmd_digest(args: argparse.Namespace) -> int:
    from shared.dora.digest import send_digests

    print(json.dumps(send_digests(_runtime(), today=args.today), indent=2))
    return 0


def cmd_services_list(args: argparse.Namespace) -> int:
    from shared.dora.service import service_map

    mapping = service_map(_runtime())
    rows = [
        {"service": e.service, "squad": e.squad, "component": e.component, "aliases": list(e.aliases)}
        for e in mapping.entries
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['service']:<28} squad {r['squad'] or '-':<16} component {r['component'] or '-':<20} "
              f"aliases {', '.join(r['aliases']) or '-'}")  # fmt: skip
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror}") from None


def cmd_services_load(args: argparse.Namespace) -> int:
    from shared.dora import store
    from shared.dora.services import parse_service_map_csv

    try:
        mapping = parse_service_map_csv(_read(args.csv), str(args.csv))
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    runtime = _runtime()
    with runtime.warehouse.session() as wh:
        written = store.replace_service_map(wh, mapping, "csv")
    print(f"{written} services loaded from {args.csv}")
    return 0


def cmd_services_sync(args: argparse.Namespace) -> int:
    from shared.dora.backstage import sync_catalog

    print(json.dumps(sync_catalog(_runtime())))
    return 0


def cmd_components_load(args: argparse.Namespace) -> int:
    from shared.dora.scorecard import parse_component_csv, replace_component_resources

    try:
        pairs = parse_component_csv(_read(args.csv))
    except ValueError as exc:
        raise BadInputError(f"{args.csv}: {exc}") from None
    runtime = _runtime()
    with runtime.warehouse.session() as wh:
        written = replace_component_resources(wh, pairs, "csv")
    print(f"{written} resources mapped to components from {args.csv}")
    return 0


def cmd_components_sync(args: argparse.Namespace) -> int:
    from shared.adapters.arm import Arm
    from shared.dora.scorecard import sync_component_resources

    runtime = _runtime()
    report = sync_component_resources(runtime, Arm.from_settings(runtime.settings), today=datetime.now(UTC).date())
    print(json.dumps(report), file=sys.stdout)
    return 0
