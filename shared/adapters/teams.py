"""Teams incoming webhooks (Workflows "When a Teams webhook request is received", or legacy connectors).

`TeamsWebhook.post(url, payload)` posts one message and raises the project's error types:
- any 2xx is success (Workflows answers 202 with an empty body) unless the body reports a 429
  (legacy connectors answer 200 "Microsoft Teams endpoint returned HTTP error 429" when throttled);
- 429 (with `Retry-After`), 408, 5xx, timeouts and connection errors -> `TransientUpstreamError`;
- 401/403 -> `UpstreamAuthError`; other 4xx -> `UpstreamError` (not worth retrying);
- a host outside `TEAMS_WEBHOOK_ALLOWED_HOSTS` (loopback always allowed) -> `ForbiddenActionError`,
  and nothing is sent.
At most `rate_per_second` (4) requests per webhook URL leave this process (a sliding one-second window per URL),
and after a 429 the URL is left alone until its Retry-After has passed. The URL is a secret: logs
and errors name it by a short hash only. Legacy MessageCards are posted here rather than with
`pymsteams.connectorcard.send()`, which would lose the status code and the Retry-After header.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import requests

from shared.adapters.http import pooled_session
from shared.alerts.routing import host_allowed
from shared.errors import ForbiddenActionError, TransientUpstreamError, UpstreamAuthError, UpstreamError
from shared.retry import retry_after_from
from shared.settings import Settings

log = logging.getLogger(__name__)

THROTTLED_MARKER = "HTTP error 429"


def webhook_ref(url: str) -> str:
    """How a webhook URL appears in logs and errors: `webhook#<8 hex>` (the URL itself is a secret)."""
    return "webhook#" + hashlib.sha256(url.encode()).hexdigest()[:8]


class RateWindow:
    """At most `rate` requests in any sliding second; `take()` says how long to wait for the next slot."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.limit = max(1, int(rate))
        self.clock = clock
        self.sent: deque[float] = deque()
        self.blocked_until = 0.0

    def take(self) -> float:
        """Take a slot if one is free (returns 0) or return the seconds to wait (takes nothing)."""
        now = self.clock()
        if now < self.blocked_until:
            return self.blocked_until - now
        while self.sent and now - self.sent[0] >= 1.0:
            self.sent.popleft()
        if len(self.sent) < self.limit:
            self.sent.append(now)
            return 0.0
        return 1.0 - (now - self.sent[0])


class TeamsWebhook:
    def __init__(
        self,
        allowed_hosts: tuple[str, ...],
        *,
        timeout: float = 10.0,
        rate_per_second: float = 4.0,
        max_wait: float = 2.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.allowed_hosts = allowed_hosts
        self.timeout = timeout
        self.rate = rate_per_second
        self.max_wait = max_wait
        self.session = session or pooled_session()
        self.clock = clock
        self.sleep = sleep
        self._buckets: dict[str, RateWindow] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, session: requests.Session | None = None) -> TeamsWebhook:
        return cls(settings.teams_webhook_allowed_hosts, timeout=settings.alert_http_timeout_seconds, session=session)

    def _bucket(self, url: str) -> RateWindow:
        with self._lock:
            bucket = self._buckets.get(url)
            if bucket is None:
                bucket = self._buckets[url] = RateWindow(self.rate, self.clock)
            return bucket

    def _acquire(self, url: str) -> None:
        bucket = self._bucket(url)
        while True:
            with self._lock:
                wait = bucket.take()
            if wait <= 0:
                return
            if wait > self.max_wait:  # throttled for longer than a function should sleep: retry later
                raise TransientUpstreamError(f"Teams {webhook_ref(url)} is throttled", retry_after=wait)
            self.sleep(wait)

    def _throttled(self, url: str, retry_after: float | None) -> TransientUpstreamError:
        delay = retry_after if retry_after is not None else 5.0
        bucket = self._bucket(url)
        with self._lock:
            bucket.blocked_until = max(bucket.blocked_until, self.clock() + delay)
        return TransientUpstreamError(f"Teams {webhook_ref(url)} answered 429 (throttled)", retry_after=delay)

    def check_allowed(self, url: str) -> None:
        """ForbiddenActionError when the URL's host is not in the allow-list (names the host, never the URL)."""
        if not host_allowed(url, self.allowed_hosts):
            host = urlparse(url).hostname or "?"
            raise ForbiddenActionError(
                f"Teams {webhook_ref(url)} on host {host!r} is not in TEAMS_WEBHOOK_ALLOWED_HOSTS; not called"
            )

    def post(self, url: str, payload: dict[str, Any]) -> int:
        """Post one message; returns the HTTP status. Raises the project's error types (see module doc)."""
        self.check_allowed(url)
        self._acquire(url)
        ref = webhook_ref(url)
        try:
            resp = self.session.post(url, json=payload, timeout=self.timeout)
        except requests.Timeout:
            raise TransientUpstreamError(f"Teams {ref} timed out after {self.timeout:g}s") from None
        except requests.RequestException as exc:
            raise TransientUpstreamError(f"Teams {ref} unreachable ({type(exc).__name__})") from None
        status = resp.status_code
        if 200 <= status < 300:
            if THROTTLED_MARKER in (resp.text or "")[:500]:
                raise self._throttled(url, retry_after_from(resp.headers))
            log.info("teams message posted", extra={"webhook": ref, "status": status})
            return status
        if status == 429:
            raise self._throttled(url, retry_after_from(resp.headers))
        if status == 408 or status >= 500:
            raise TransientUpstreamError(
                f"Teams {ref} answered {status}", retry_after=retry_after_from(resp.headers)
            )
        if status in (401, 403):
            raise UpstreamAuthError(f"Teams {ref} refused the request ({status}): the webhook URL is wrong or revoked")
        raise UpstreamError(f"Teams {ref} rejected the message ({status}): {_snippet(resp.text)}")


def _snippet(text: str | None) -> str:
    text = (text or "").strip().replace("\n", " ")
    return text[:200] or "empty body"
