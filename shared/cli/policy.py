"""`policy ...`: kill switches, a dry-run plan of an events file, counters and recorded decisions."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.errors import BadInputError

# every effect an Azure Policy definition can have (policy definition structure, "Policy effects")
POLICY_EFFECTS = (
    "addToNetworkGroup", "append", "audit", "auditIfNotExists", "deny", "denyAction", "deployIfNotExists",
    "disabled", "manual", "modify", "mutate",
)  # fmt: skip


def _effect(text: str) -> str:
    by_lower = {e.lower(): e for e in POLICY_EFFECTS}
    found = by_lower.get(text.strip().lower())
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an Azure Policy effect; one of {', '.join(POLICY_EFFECTS)}")
    return found


def register(subparsers: Any) -> None:
    policy = subparsers.add_parser("policy", help="policy remediation: kill switches, dry-run plans, counters")
    commands = policy.add_subparsers(dest="command", metavar="<command>", required=True)

    kill = commands.add_parser("killswitch", help="stop or resume remediation of one assignment (no redeploy)")
    kill_cmds = kill.add_subparsers(dest="action", metavar="<action>", required=True)
    set_ = kill_cmds.add_parser("set", help="switch remediation of an assignment off")
    set_.add_argument("assignment_id", help="full policy assignment id")
    set_.add_argument("--reason", required=True, help="why (shown in plans and to the next operator)")
    set_.add_argument("--by", default="", help="who sets it")
    set_.set_defaults(handler=cmd_kill_set)
    clear = kill_cmds.add_parser("clear", help="switch remediation of an assignment back on")
    clear.add_argument("assignment_id")
    clear.set_defaults(handler=cmd_kill_clear)
    listing = kill_cmds.add_parser("list", help="assignments whose kill switch is on")
    listing.set_defaults(handler=cmd_kill_list)

    plan = commands.add_parser(
        "plan",
        help="dry-run: coalesce the NonCompliant events of a file into the tasks that would be created",
        description="Reads a JSON array of policy state events (Event Grid or CloudEvents schema). Effects "
        "are not looked up: --effect applies to every event (default deployIfNotExists). Changes nothing.",
    )
    plan.add_argument("--events", required=True, type=Path, help="JSON file: an event or an array of events")
    plan.add_argument(
        "--effect",
        default="deployIfNotExists",
        type=_effect,
        help="effect to assume for every assignment (an Azure Policy effect: " + ", ".join(POLICY_EFFECTS) + ")",
    )
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(handler=cmd_plan)

    counters = commands.add_parser("counters", help="rejected events by reason, poison work items")
    counters.set_defaults(handler=cmd_counters)
    decisions = commands.add_parser("decisions", help="recorded dry-run and refused remediation decisions")
    decisions.set_defaults(handler=cmd_decisions)


def _store() -> Any:
    from shared.adapters.storage import StateStore
    from shared.settings import load_settings

    return StateStore.from_settings(load_settings())


def cmd_kill_set(args: argparse.Namespace) -> int:
    from shared.policy.remediation import set_kill_switch

    set_kill_switch(_store(), args.assignment_id, reason=args.reason, by=args.by)
    print(f"kill switch ON for {args.assignment_id}: no remediation task from the next plan on")
    return 0


def cmd_kill_clear(args: argparse.Namespace) -> int:
    from shared.policy.remediation import clear_kill_switch

    clear_kill_switch(_store(), args.assignment_id)
    print(f"kill switch OFF for {args.assignment_id}")
    return 0


def cmd_kill_list(args: argparse.Namespace) -> int:
    from shared.policy.remediation import kill_switches

    rows = kill_switches(_store())
    if not rows:
        print("no kill switch is on")
    for r in rows:
        print(f"{r['assignment_id']}  reason={r['reason']!r} by={r['set_by'] or '-'} at={r['set_at']}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from shared.policy.effects import REMEDIATE, path_for_effect
    from shared.policy.events import BadPolicyEvent, parse_policy_event
    from shared.policy.planning import Guardrails, PendingViolation, plan_remediations
    from shared.policy.remediation import describe_task
    from shared.settings import load_settings

    try:
        doc = json.loads(args.events.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{args.events}: cannot read a JSON document ({exc})") from None
    raw_events = doc if isinstance(doc, list) else [doc]
    settings = load_settings()
    rejected: dict[str, int] = {}
    newest: dict[tuple[str, str, str], Any] = {}
    for i, raw in enumerate(raw_events):
        try:
            event = parse_policy_event(raw)
        except BadPolicyEvent as bad:
            rejected[bad.reason] = rejected.get(bad.reason, 0) + 1
            print(f"skipped event [{i}]: {bad.detail}")
            continue
        if event.key not in newest or event.timestamp > newest[event.key].timestamp:
            newest[event.key] = event
    window = int(datetime.now(UTC).timestamp()) // settings.remediation_window_seconds
    remediable = path_for_effect(args.effect) == REMEDIATE
    pending = [
        PendingViolation(e.assignment_id, e.definition_reference_id, e.resource_id, window)
        for e in newest.values()
        if e.is_non_compliant and remediable
    ]

    guard = Guardrails(
        mode="dry-run",
        allowed=settings.remediation_allowed_assignments,
        denied=settings.remediation_denied_assignments,
        max_concurrent=settings.remediation_max_concurrent_tasks,
    )
    plan = plan_remediations(pending, guard)
    if args.json:
        print(
            json.dumps(
                {
                    "events": len(raw_events),
                    "rejected": rejected,
                    "tasks": [
                        {
                            "name": t.name,
                            "assignment_id": t.key.assignment_id,
                            "definition_reference_id": t.key.definition_reference_id,
                            "scope": t.key.scope,
                            "resources": list(t.resources),
                            "decision": t.decision,
                            "reason": t.reason,
                        }
                        for t in plan.tasks
                    ],
                },
                indent=2,
            )
        )
        return 0
    print(f"{len(raw_events)} event(s), {len(newest)} current state(s), {sum(rejected.values())} rejected")
    if not remediable:
        print(f"effect {args.effect}: not remediable, every NonCompliant resource would be escalated")
    for task in plan.tasks:
        print(describe_task(task))
    return 0


def cmd_counters(args: argparse.Namespace) -> int:
    from shared.policy.worker import read_counters

    counters = read_counters(_store())
    if not counters:
        print("no counter yet")
    for name, value in sorted(counters.items()):
        print(f"{name:<40} {value}")
    return 0


def cmd_decisions(args: argparse.Namespace) -> int:
    from shared.policy.remediation import decisions

    rows = decisions(_store())
    if not rows:
        print("no recorded decision")
    for r in rows:
        print(
            f"{r.get('Decision')}: {r.get('AssignmentId')} at {r.get('Scope')} -> {r.get('ResourceCount')} resource(s)"
        )
    return 0
