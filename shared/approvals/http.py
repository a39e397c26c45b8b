"""Idempotent HTTP answers for the Logic Apps functions (no HTTP framework in here).

A request with an `Idempotency-Key` header is answered once: the first 2xx answer is stored under
(operation, path ids, key) in the `idempotency` table and replayed for the same key, without running
anything again. The same key with a different body is a 409; a request still running under that
key is a 409 too. Without the header, a Logic App's request is keyed on its run *and action*
(`x-ms-workflow-run-id` + `x-ms-workflow-operation-name`, + the loop iteration when in a loop) and
the body, so two different calls from one run (two incidents) never collide, while a retry of the
same action replays. Without either, every request runs (decisions are still exactly-once: see
workflow.decide).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.errors import BadInputError, ConflictError
from shared.idempotency import Idempotency, Scope, idempotency_key

KEY_HEADER = "idempotency-key"
RUN_HEADER = "x-ms-workflow-run-id"
# what identifies one call inside a run: the action, and the iteration when it runs in a loop
ACTION_HEADERS = (
    "x-ms-workflow-operation-name",
    "x-ms-workflow-repeatitem-scope-name",
    "x-ms-workflow-repeatitem-index",
)
KEY_HEADERS = (KEY_HEADER, RUN_HEADER)
RUN_KEY_PREFIX = "run:"
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    replayed: bool = False


def request_key(headers: Mapping[str, str]) -> str:
    """The idempotency key of a request ('' when it has none); BadInputError for an unusable one.

    `Idempotency-Key` as sent; else `run:<run id>:<action>[:<loop scope>:<index>]` from the Logic App's headers."""
    lowered = {k.lower(): v for k, v in headers.items()}
    explicit = _checked(lowered, KEY_HEADER)
    if explicit:
        return explicit
    run = _checked(lowered, RUN_HEADER)
    if not run:
        return ""
    parts = [run] + [_checked(lowered, name) for name in ACTION_HEADERS]
    return RUN_KEY_PREFIX + ":".join(parts).rstrip(":")


def _checked(lowered: Mapping[str, str], name: str) -> str:
    value = (lowered.get(name) or "").strip()
    if value and not _KEY.match(value):
        problem = "must be 1-200 visible ASCII characters"
        raise BadInputError(f"{name}: {problem}", errors=[{"field": f"header:{name}", "problem": problem}])
    return value


def answer_once(
    store: Any, operation: str, scope_ids: tuple[str, ...], key: str, payload: Any, run: Callable[[], Answer]
) -> Answer:
    """Run `run()` once per key; a replay gets the stored answer with `replayed=True`."""
    if not key:
        return run()
    if key.startswith(RUN_KEY_PREFIX):  # derived from the run: the body tells two calls of one action apart
        key += ":" + hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    row = idempotency_key(*scope_ids, key)
    done = Idempotency(store).once(
        Scope(f"http-{operation}", lease=timedelta(minutes=2), expires_after=timedelta(days=14), spread=1),
        row,
        run,
        payload=payload,
        keep=lambda answer: 200 <= answer.status < 300,  # only a success is replayed
        encode=lambda answer: {"status": answer.status, "body": answer.body},
        decode=lambda doc: Answer(int(doc["status"]), doc["body"], replayed=True),
    )
    if done.busy:
        raise ConflictError(
            f"a request with this Idempotency-Key is still running; retry in {max(1, round(done.retry_after))} s"
        )
    assert done.result is not None
    return done.result
