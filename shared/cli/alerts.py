"""`alerts send --file A.json`, `alerts replay-poison`, `alerts outbox`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from shared.cli.common import cli_runtime as _runtime
from shared.errors import BadInputError


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("alerts", help="alert delivery: send one, replay the poison queue, list the outbox")
    commands = group.add_subparsers(dest="command", metavar="<command>", required=True)

    send = commands.add_parser(
        "send",
        help="validate an alert (JSON file) and deliver it now (smoke test), or only enqueue it with --queue",
        description="The file holds one alert object (see docs/alerts.md). Without --queue the alert "
        "is delivered by this process right away, with the same idempotency as the queue function.",
    )
    send.add_argument("--file", required=True, type=Path, help="JSON file with one alert")
    send.add_argument("--queue", action="store_true", help="only put it on the alerts queue for the function")
    send.set_defaults(handler=cmd_send)

    replay = commands.add_parser(
        "replay-poison", help="move messages from alerts-poison back to alerts (after fixing the cause)"
    )
    replay.add_argument("--max", type=int, default=1000, help="at most this many messages (default 1000)")
    replay.set_defaults(handler=cmd_replay_poison)

    outbox = commands.add_parser("outbox", help="list outbox deliveries, pending queue messages and failed ones")
    outbox.add_argument("--json", action="store_true", help="machine-readable output")
    outbox.set_defaults(handler=cmd_outbox)


def cmd_send(args: argparse.Namespace) -> int:
    from shared.alerts.delivery import alert_message, enqueue_alert
    from shared.alerts.model import Alert

    try:
        doc = json.loads(args.file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInputError(f"{args.file}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{args.file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    try:
        alert = Alert.from_dict(doc)
    except BadInputError as err:
        raise BadInputError(f"{args.file}: {err.detail}", errors=err.errors) from None
    runtime = _runtime()
    if args.queue:
        message_id = enqueue_alert(runtime.storage, alert)
        print(json.dumps({"queued": message_id, "dedupe_key": alert.dedupe_key}))
        return 0
    outcome = runtime.alert_delivery.handle(alert_message(alert))
    print(json.dumps(outcome.summary(), indent=2))
    return 1 if outcome.poisoned else 0


def cmd_replay_poison(args: argparse.Namespace) -> int:
    from shared.alerts.delivery import POISON, QUEUE

    store = _runtime().storage
    moved = skipped = 0
    while moved + skipped < args.max:
        batch = store.receive(POISON, max_messages=min(32, args.max - moved - skipped), visibility_timeout=60)
        if not batch:
            break
        for msg in batch:
            body = replay_body(msg.text())
            if body is None:
                skipped += 1  # an unparseable message stays in the poison queue for a human
                continue
            store.send(QUEUE, body)
            store.ack(POISON, msg)
            moved += 1
    print(json.dumps({"requeued": moved, "left_in_poison": skipped}))
    return 0


def replay_body(text: str) -> dict[str, Any] | str | None:
    """What to put back on `alerts` for a poison message: attempts reset, errors dropped; None if not replayable."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("type") == "invalid":
        return None
    doc.pop("errors", None)
    doc["attempt"] = 1
    return doc


def cmd_outbox(args: argparse.Namespace) -> int:
    from shared.alerts.delivery import POISON, QUEUE
    from shared.alerts.outbox import Outbox

    runtime = _runtime()
    entries = Outbox(runtime.settings.outbox_dir).entries()
    pending = runtime.storage.queue_length(QUEUE)
    failed = []
    for msg in runtime.storage.peek(POISON, max_messages=32):
        try:
            doc = json.loads(msg.text())
        except ValueError:
            doc = {"body": msg.text()[:200]}
        alert = doc.get("alert") or {}
        failed.append(
            {
                "type": doc.get("type"),
                "dedupe_key": alert.get("dedupe_key") or doc.get("squad", ""),
                "title": alert.get("title", ""),
                "channels": doc.get("channels", []),
                "errors": doc.get("errors") or doc.get("error") or "raised in the function (see its log)",
            }
        )
    report = {
        "outbox_dir": runtime.settings.outbox_dir,
        "outbox": [
            {"channel": e.channel, "action": e.action, **describe_delivery(e), "file": e.path.name} for e in entries
        ],
        "pending": pending,
        "failed": failed,
        "failed_total": runtime.storage.queue_length(POISON),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"outbox {report['outbox_dir']}: {len(entries)} deliveries")
    for row in report["outbox"]:
        print(f"  {row['channel']:<10} {row['action']:<7} {row['squad'] or 'default':<16} {row['title']}")
        print(f"  {'':<10} {'':<7} {row['file']}")
    print(f"pending on queue {QUEUE}: {pending} (approximate)")
    print(f"failed in {POISON}: {report['failed_total']}")
    for f in failed:
        print(f"  {f['type']} {f['dedupe_key']} {f['title']!r} channels={f['channels']} errors={f['errors']}")
    return 0


def describe_delivery(entry: Any) -> dict[str, str]:
    """Title and squad of one outbox file: a Teams card (Adaptive or MessageCard) or a ServiceNow incident."""
    try:
        doc = entry.payload()
    except (OSError, ValueError):
        return {"title": "(unreadable file)", "squad": ""}
    title, squad = "", ""
    if isinstance(doc, dict) and doc.get("attachments"):
        body = (doc["attachments"][0].get("content") or {}).get("body") or []
        texts = [b.get("text", "") for b in body if isinstance(b, dict) and b.get("type") == "TextBlock"]
        title = texts[0] if texts else ""
        subtitle = texts[1] if len(texts) > 1 else ""
        squad = subtitle.rsplit("squad ", 1)[-1] if "squad " in subtitle else ""
    elif isinstance(doc, dict) and "@type" in doc:
        title = str(doc.get("title", ""))
        subtitle = str(((doc.get("sections") or [{}])[0]).get("activityTitle", ""))
        squad = subtitle.rsplit("squad ", 1)[-1] if "squad " in subtitle else ""
    elif isinstance(doc, dict):
        nested = doc.get("incident")
        incident: dict[str, Any] = nested if isinstance(nested, dict) else doc
        notes = str(incident.get("work_notes") or incident.get("close_notes") or "").strip().splitlines()
        title = str(incident.get("short_description") or (notes[0] if notes else ""))
        squad = str(incident.get("assignment_group", ""))
    return {"title": title, "squad": squad}
