"""Timers and queue pollers of the local host, with the Functions host's semantics.

- Timers: 6-field NCRONTAB (`sec min hour day month weekday`, UTC), `%SETTING%` expressions
  resolved from the app settings; `run_on_startup` honoured.
- Queues: poll Azure Storage; a failed invocation makes the message visible again after
  `visibilityTimeout`; after `maxDequeueCount` attempts it moves to `<queue>-poison`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from croniter import croniter

from shared.errors import SettingsError
from shared.settings import lookup

log = logging.getLogger("devhost")

_EXPR = re.compile(r"%([A-Za-z0-9_:.\-]+)%")


def resolve_binding_expression(value: str) -> str:
    """Replace `%NAME%` with the app setting NAME, as the Functions host does; SettingsError if unset."""

    def sub(m: re.Match[str]) -> str:
        resolved = lookup(m.group(1))
        if resolved is None or resolved == "":
            raise SettingsError(f"binding expression %{m.group(1)}% names an app setting that is not set")
        return resolved

    return _EXPR.sub(sub, value)


def next_fire(schedule: str, after: datetime) -> datetime:
    """Next time a 6-field NCRONTAB schedule fires strictly after `after` (UTC)."""
    return croniter(schedule, after, second_at_beginning=True).get_next(datetime)


def _timespan_seconds(value: str | None, default: float) -> float:
    if not value:
        return default
    parts = [float(p) for p in str(value).split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return parts[-3] * 3600 + parts[-2] * 60 + parts[-1]


@dataclass(frozen=True)
class QueueOptions:
    max_dequeue_count: int = 5
    visibility_timeout_seconds: float = 0.0
    max_polling_interval_seconds: float = 2.0
    batch_size: int = 16

    @classmethod
    def from_host_json(cls, path: Path) -> QueueOptions:
        if not path.is_file():
            return cls()
        queues = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
        return cls(
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout_seconds=_timespan_seconds(queues.get("visibilityTimeout"), 0.0),
            max_polling_interval_seconds=_timespan_seconds(queues.get("maxPollingInterval"), 2.0),
            batch_size=int(queues.get("batchSize", 16)),
        )


class TimerRunner:
    def __init__(self, info: Any, schedule: str, host: Any) -> None:
        if not croniter.is_valid(schedule, second_at_beginning=True) or len(schedule.split()) != 6:
            raise SettingsError(
                f"timer {info.name}: schedule {schedule!r} is not a 6-field NCRONTAB expression (sec min hour day month weekday)"
            )
        self.info = info
        self.schedule = schedule
        self.host = host

    def run(self, stop: threading.Event) -> None:
        if self.info.binding.get("run_on_startup"):
            self._fire(past_due=False)
        due = next_fire(self.schedule, datetime.now(UTC))
        while not stop.is_set():
            wait = (due - datetime.now(UTC)).total_seconds()
            if wait > 0 and stop.wait(min(wait, 1.0)):
                return
            if wait > 0:
                continue
            late = (datetime.now(UTC) - due) > timedelta(seconds=30)
            self._fire(past_due=late)
            due = next_fire(self.schedule, datetime.now(UTC))

    def _fire(self, *, past_due: bool) -> None:
        try:
            self.host.invoke(self.info, TimerRequest(past_due=past_due))
        except Exception:
            log.exception("timer function %s failed", self.info.name)


class QueuePoller:
    def __init__(self, info: Any, queue: str, host: Any, options: QueueOptions) -> None:
        self.info = info
        self.queue = queue
        self.poison = f"{queue}-poison"
        self.host = host
        self.options = options

    def run(self, stop: threading.Event) -> None:
        idle = 0.1
        while not stop.is_set():
            try:
                handled = self.poll_once()
            except Exception:
                log.exception("polling queue %s failed", self.queue)
                handled = 0
            if handled:
                idle = 0.1
                continue
            stop.wait(idle)
            idle = min(idle * 2, self.options.max_polling_interval_seconds)

    def poll_once(self) -> int:
        store = self.host.storage()
        messages = store.receive(self.queue, max_messages=self.options.batch_size, visibility_timeout=300)
        for msg in messages:
            self._handle(store, msg)
        return len(messages)

    def _handle(self, store: Any, msg: Any) -> None:
        trigger = QueueMessage(
            id=msg.id,
            body=msg.body,
            dequeue_count=msg.dequeue_count,
            pop_receipt=msg.pop_receipt,
            insertion_time=msg.inserted_on,
        )
        try:
            self.host.invoke(self.info, trigger, msg.id)
        except Exception:
            log.exception(
                "queue function %s failed",
                self.info.name,
                extra={"queue": self.queue, "message_id": msg.id, "dequeue_count": msg.dequeue_count},
            )
            if msg.dequeue_count >= self.options.max_dequeue_count:
                store.send(self.poison, msg.body)
                store.ack(self.queue, msg)
                log.warning("message moved to poison queue", extra={"queue": self.poison, "message_id": msg.id})
            else:
                store.release(self.queue, msg, delay_seconds=int(self.options.visibility_timeout_seconds))
            return
        store.ack(self.queue, msg)
