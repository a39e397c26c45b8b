"""`demands reconcile --since`, `demands replay-poison`: the operator side of the demand sync."""

from __future__ import annotations

import argparse
import json
from typing import Any

from shared.cli.common import cli_runtime as _runtime


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("demands", help="ServiceNow demand <-> Azure Boards sync: reconcile, replay")
    commands = group.add_subparsers(dest="command", metavar="<command>", required=True)

    rec = commands.add_parser(
        "reconcile",
        help="compare approved ServiceNow demands with Azure Boards work items and repair the differences",
        description="Approved demands (SERVICENOW_DEMAND_APPROVED_QUERY) updated since --since without a work "
        "item get one; demands whose state lags their work item's (DEMANDS_STATE_MAP) are set to it. "
        "Exit code 1 when a repair failed.",
    )
    rec.add_argument("--since", required=True, help="a date (2026-11-01), an ISO timestamp, or a duration (7d, 12h)")
    rec.add_argument("--dry-run", action="store_true", help="only report what would be repaired")
    rec.add_argument("--json", action="store_true", help="print the report as JSON")
    rec.set_defaults(handler=cmd_reconcile)

    replay = commands.add_parser(
        "replay-poison", help="move failed demand steps from demands-poison back to demands (after fixing the cause)"
    )
    replay.add_argument("--max", type=int, default=1000, help="at most this many messages (default 1000)")
    replay.set_defaults(handler=cmd_replay_poison)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from shared.demands.reconcile import parse_since, reconcile
    from shared.demands.sync import sync_for

    since = parse_since(args.since)
    report = reconcile(sync_for(_runtime()), since, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(report.summary(), indent=2))
    else:
        print(
            f"checked {report.checked} approved demands since {report.since}: {report.in_sync} in sync, "
            f"{len(report.fixed)} {'to fix' if args.dry_run else 'fixed'}, {len(report.failed)} failed"
        )
        for entry in report.fixed:
            print(f"  fixed  {entry['number']:<14} {entry['action']:<6} {entry.get('result', '')}")
        for entry in report.failed:
            print(f"  FAILED {entry['number']:<14} {entry['action']:<6} {entry['error']}")
    return 1 if report.failed else 0


def cmd_replay_poison(args: argparse.Namespace) -> int:
    from shared.demands.sync import POISON, QUEUE

    store = _runtime().storage
    moved = 0
    while moved < args.max:
        batch = store.receive(POISON, max_messages=min(32, args.max - moved), visibility_timeout=60)
        if not batch:
            break
        for message in batch:
            try:
                doc = json.loads(message.text())
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                doc.pop("error", None)
                doc.pop("failedAt", None)
                store.send(QUEUE, {**doc, "attempt": 1})
            else:
                store.send(QUEUE, message.text())
            store.ack(POISON, message)
            moved += 1
    print(f"moved {moved} message(s) from {POISON} back to {QUEUE}")
    return 0
