"""Idempotent HTTP answers for the Logic Apps functions (no HTTP framework in here).

A request with an `Idempotency-Key` header, or else the Logic App run id (`x-ms-workflow-run-id`),
is answered once: the first 2xx answer is stored under (operation, path ids, key) in the
`idempotency` table and replayed for the same key, without running anything again. The same key
with a different body is a 409; a request still running under that key is a 409 too. Without
either header every request runs (decisions are still exactly-once: see workflow.decide).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.errors import BadInputError, ConflictError
from shared.idempotency import Idempotency, Scope, idempotency_key

KEY_HEADERS = ("idempotency-key", "x-ms-workflow-run-id")
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    replayed: bool = False


def request_key(headers: Mapping[str, str]) -> str:
    """The idempotency key of a request ('' when it has none); BadInputError for an unusable one."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in KEY_HEADERS:
        value = (lowered.get(name) or "").strip()
        if value:
            if not _KEY.match(value):
                problem = "must be 1-200 visible ASCII characters"
                raise BadInputError(f"{name}: {problem}", errors=[{"field": f"header:{name}", "problem": problem}])
            return value
    return ""


def answer_once(
    store: Any, operation: str, scope_ids: tuple[str, ...], key: str, payload: Any, run: Callable[[], Answer]
) -> Answer:
    """Run `run()` once per key; a replay gets the stored answer with `replayed=True`."""
    if not key:
        return run()
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
