"""Deliver queued alerts to Teams and ServiceNow with an exactly-once effect per (alert, channel).

Producers call `enqueue_alert(store, alert)` and return. The `alert_delivery` queue function hands
each message to `AlertDelivery.handle()`, which for every channel still to do:
1. claims an idempotency record keyed by (dedupe key, action, content fingerprint, channel) with
   `Idempotency.once` (scope `alerts`, spread over 16 partitions): a redelivered message or a
   replayed alert finds it COMPLETED and posts nothing; one held by a worker that crashed is taken
   over after its 2-minute lease;
2. posts (or writes the outbox file when the channel is not configured), then completes the claim;
   storm control is decided inside the claim, so a replay is never counted twice. The channels of
   one alert run side by side (the second on a small thread pool): each has its own claim; a
   channel with nothing to do (no incident wanted) answers on the calling thread, with no handoff.
Storage round trips per alert: one claim and one completion per channel, the enqueue and the
message delete: 4 on the happy path for a Teams-only alert, 6 with an incident. Storm permits are
leased in blocks and Teams rate shares for 30 s, and a squad's first alert in a window writes both
in one transaction (its storm rows sit in its webhook's partition): one write covers several alerts.
3. on a transient failure (timeout, 429, 5xx) keeps the claim and re-enqueues only the channels
   left, with the claims' etags (`claims`: the retry re-takes each with one write), `attempt + 1`
   and an exponential, jittered visibility delay (a queue trigger cannot
   delay its own retry); after `ALERT_MAX_ATTEMPTS`, or at once on a permanent failure (refused
   host, 401/403, 4xx), the message goes to `alerts-poison` and a "delivery failing" alert goes
   to the default route by the other channel.
Messages are JSON: {"type": "alert", "alert": {...}, "channels": [...], "attempt": n, "claims"?: {...}}
or {"type": "digest", "squad": ..., "window_start": ..., "webhook"?: "webhook-<hash>", "attempt": n}.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared.adapters.servicenow import ServiceNowClient
from shared.adapters.teams import TeamsWebhook, webhook_ref
from shared.alerts import cards, incidents
from shared.alerts.model import Alert
from shared.alerts.outbox import Outbox, outbox_for
from shared.alerts.routing import AlertRoute, AlertRoutes, load_routes, route_for
from shared.alerts.storm import DIGEST, StormGate, StormWindow
from shared.errors import (
    BadInputError,
    ForbiddenActionError,
    StorageError,
    TransientUpstreamError,
    UpstreamAuthError,
    UpstreamError,
)
from shared.idempotency import Idempotency, Scope, idempotency_key
from shared.retry import backoff_delay
from shared.review.service import review_link_for_alert
from shared.settings import Settings

log = logging.getLogger(__name__)

QUEUE = "alerts"
POISON = "alerts-poison"
CHANNELS = ("teams", "servicenow")
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600
MAX_MESSAGE_BYTES = 40 * 1024
CHANNEL_THREADS = 32  # one per worker thread (PYTHON_THREADPOOL_THREAD_COUNT) running an alert with an incident
BUSY_POLL_SECONDS = 10.0  # how soon a message whose delivery another worker holds looks again


class AlertQueue(Protocol):
    """The part of `StateStore` delivery uses (tables for idempotency and storms, queues for retries)."""

    def send(
        self, queue: str, message: dict[str, Any] | str | bytes, *, visibility_timeout: int | None = None
    ) -> str: ...
    def insert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> bool: ...
    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None: ...
    def replace_if_unchanged(self, table: str, entity: dict[str, Any]) -> Any: ...
    def delete(self, table: str, partition: str, row: str) -> None: ...
    def upsert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> None: ...
    def transact(self, table: str, operations: list[tuple[Any, ...]]) -> list[dict[str, Any]]: ...
    def query(self, table: str, filter: str | None = None, **params: Any) -> Any: ...


# an effect per (alert, channel); the lease covers one HTTP call with its timeout and a rate wait
ALERT_SCOPE = Scope("alerts", lease=timedelta(minutes=2), expires_after=timedelta(days=14), spread=16)


def alert_message(
    alert: Alert, channels: tuple[str, ...] | list[str] | None = None, attempt: int = 1
) -> dict[str, Any]:
    """The queue message for an alert (all channels unless told)."""
    return {"type": "alert", "alert": alert.to_dict(), "channels": list(channels or CHANNELS), "attempt": attempt}


def enqueue_alert(store: Any, alert: Alert) -> str:
    """Validate an alert and put it on the `alerts` queue; returns the message id. BadInputError if invalid."""
    if not isinstance(alert, Alert):
        raise BadInputError(f"enqueue_alert expects an Alert, got {type(alert).__name__}")
    message = alert_message(Alert.from_dict(alert.to_dict()))  # the same gate as JSON input
    size = len(json.dumps(message, separators=(",", ":")).encode())
    if size > MAX_MESSAGE_BYTES:
        raise BadInputError(
            f"alert {alert.dedupe_key!r} is {size} bytes as a message; the limit is {MAX_MESSAGE_BYTES}"
        )
    return store.send(QUEUE, message)


@dataclass
class ChannelResult:
    """What happened on one channel: delivered, outbox, duplicate, skipped, digest, retry or failed."""

    channel: str
    status: str
    detail: str = ""
    retry_after: float | None = None
    counts_as_attempt: bool = True
    reason: str = ""


@dataclass
class DeliveryOutcome:
    kind: str
    dedupe_key: str
    results: list[ChannelResult] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    delay_seconds: int = 0
    poisoned: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dedupe_key": self.dedupe_key,
            "channels": {r.channel: r.status for r in self.results},
            "requeued": self.requeued,
            "delay_seconds": self.delay_seconds,
            "poisoned": self.poisoned,
        }


class AlertDelivery:
    """Delivery of queue messages, with its adapters (built once per process: rate limits are in-process)."""

    def __init__(
        self,
        settings: Settings,
        store: AlertQueue,
        routes: AlertRoutes,
        *,
        teams: TeamsWebhook | None = None,
        servicenow: ServiceNowClient | None = None,
        outbox: Outbox | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: Callable[[], float] = random.random,
        idempotency: Idempotency | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.routes = routes
        self.teams = teams or TeamsWebhook.from_settings(settings)
        self.servicenow = servicenow
        self.outbox = outbox or outbox_for(settings, store)  # a local folder never in Azure
        self.clock = clock
        self.rng = rng
        self.idempotency = idempotency or Idempotency(store)
        self.storms = StormGate(store, settings.alert_storm_threshold, settings.alert_storm_window_minutes)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: AlertQueue,
        *,
        session: Any = None,
        idempotency: Idempotency | None = None,
    ) -> AlertDelivery:
        """Delivery with its Teams and ServiceNow clients on `session` (the runtime's pooled session)."""
        servicenow = (
            ServiceNowClient.from_settings(settings, session=session) if settings.servicenow_instance_url else None
        )
        teams = TeamsWebhook.from_settings(settings, session=session, store=store)
        return cls(settings, store, load_routes(settings), teams=teams, servicenow=servicenow, idempotency=idempotency)

    # -- entry point --

    def handle(self, body: bytes | str | dict[str, Any]) -> DeliveryOutcome:
        """Process one queue message. Bad messages go to the poison queue; never raises for delivery failures."""
        try:
            message = body if isinstance(body, dict) else json.loads(body)
            if not isinstance(message, dict):
                raise BadInputError("the message is not a JSON object")
            kind = message.get("type", "alert")
            if kind == "digest":
                return self._handle_digest(message)
            if kind != "alert":
                raise BadInputError(f"unknown message type {kind!r}")
            alert = Alert.from_dict(message.get("alert"))
        except (ValueError, BadInputError) as exc:
            detail = exc.detail if isinstance(exc, BadInputError) else f"not valid JSON: {exc}"
            raw = body if isinstance(body, (str, bytes)) else json.dumps(body, default=str)
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            self.store.send(POISON, json.dumps({"type": "invalid", "error": detail, "body": text[:30000]}))
            log.error("invalid alert message sent to poison", extra={"error": detail})
            return DeliveryOutcome("invalid", "", poisoned=["message"])
        channels = [c for c in message.get("channels") or CHANNELS if c in CHANNELS]
        attempt = int(message.get("attempt") or 1)
        held = message.get("claims")
        claims = {str(k): str(v) for k, v in held.items() if k in channels} if isinstance(held, dict) else {}
        return self._deliver(alert, channels, attempt, claims)

    # -- one alert --

    def _deliver(
        self, alert: Alert, channels: list[str], attempt: int, claims: dict[str, str] | None = None
    ) -> DeliveryOutcome:
        route = route_for(alert, self.routes)
        outcome = DeliveryOutcome("alert", alert.dedupe_key)
        claims = dict(claims or {})  # channel -> token of a claim kept for its retry (in and out)

        def deliver(channel: str) -> ChannelResult:
            try:
                return (
                    self.teams_channel(alert, route, claims=claims)
                    if channel == "teams"
                    else self.servicenow_channel(alert, route, claims=claims)
                )
            except StorageError:
                raise  # our own state is unreachable: let the host redeliver (the records make that safe)
            except TransientUpstreamError as err:
                return ChannelResult(channel, "retry", err.detail, err.retry_after)
            except (UpstreamError, ForbiddenActionError) as err:
                return ChannelResult(channel, "failed", err.detail, reason=_reason(err))

        # a channel with nothing to do (no incident wanted) answers at once, without a thread handoff
        results: dict[str, ChannelResult] = {}
        for channel in channels:
            skip = self._nothing_to_do(alert, channel)
            if skip is not None:
                results[channel] = skip
        busy = [c for c in channels if c not in results]
        # channels are independent (each its own claim): the others run beside the first, so an alert
        # with an incident waits for the slower channel, not for the sum of both
        others = {c: self._channel_threads().submit(deliver, c) for c in busy[1:]}
        failures: list[BaseException] = []
        try:
            if busy:
                results[busy[0]] = deliver(busy[0])
        except BaseException as exc:  # wait for the others before raising: no effect left running unseen
            failures.append(exc)
        for channel, running in others.items():
            try:
                results[channel] = running.result()
            except BaseException as exc:
                failures.append(exc)
        if failures:
            raise failures[0]
        outcome.results.extend(results[c] for c in channels)
        message = alert_message(alert, attempt=attempt)
        retrying = {r.channel for r in outcome.results if r.status == "retry"}
        message["claims"] = {c: t for c, t in claims.items() if c in retrying}
        self._follow_up(outcome, message, attempt, alert)
        for channel in outcome.poisoned:  # a kept claim of a channel given up: free it for a replay
            if channel in claims:
                self.idempotency.release(ALERT_SCOPE, self._claim_key(alert, channel))
        for r in outcome.results:
            log.info(
                "alert channel %s: %s",
                r.channel,
                r.status,
                extra={"dedupe_key": alert.dedupe_key, "squad": route.squad, "attempt": attempt, "detail": r.detail},
            )
        return outcome

    def _channel_threads(self) -> ThreadPoolExecutor:
        """The process's threads for the second channel of an alert (built on first use, not at import)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(CHANNEL_THREADS, thread_name_prefix="alert-channel")
            return self._pool

    def _claim_key(self, alert: Alert, channel: str) -> str:
        return idempotency_key(alert.dedupe_key, alert.action, alert.fingerprint(), channel)

    def _once(
        self,
        key: str,
        channel: str,
        effect: Callable[[], tuple[str, dict[str, Any]]],
        claims: dict[str, str] | None = None,
    ) -> ChannelResult:
        """Run `effect` at most once per key: done before -> duplicate; held by another worker -> retry
        after its lease (not counted as an attempt). With `claims`, a transient failure keeps the claim
        for the retry (its token goes into `claims[channel]`, then into the retry message), and a token
        found there is resumed with one write instead of a release and a new claim."""
        resume = claims.pop(channel, "") if claims is not None else ""

        def hold(exc: BaseException, token: str) -> bool:
            if claims is None or not isinstance(exc, TransientUpstreamError):
                return False
            claims[channel] = token
            return True

        done = self.idempotency.once(
            ALERT_SCOPE,
            key,
            effect,
            encode=lambda r: {"status": r[0], **r[1]},
            decode=lambda d: (d["status"], d),
            resume=resume,
            hold=hold,
        )
        if done.busy:
            return ChannelResult(
                channel,
                "retry",
                "another worker holds this delivery",
                # a claim kept for its holder's retry is done well before its lease: look again soon
                retry_after=min(done.retry_after, BUSY_POLL_SECONDS),
                counts_as_attempt=False,
            )
        if done.replayed:
            return ChannelResult(channel, "duplicate", "delivered before")
        assert done.result is not None
        status, result = done.result
        return ChannelResult(channel, status, str(result.get("detail", "")))

    # -- Teams --

    def teams_channel(self, alert: Alert, route: AlertRoute, *, claims: dict[str, str] | None = None) -> ChannelResult:
        url = route.teams_webhook_url
        if url:
            self.teams.check_allowed(url)  # refused before anything is claimed or sent
        content = cards.alert_content(alert, route.squad, review_link_for_alert(self.settings, alert))

        def post() -> tuple[str, dict[str, Any]]:
            # inside the claim: a replay answers "duplicate" before storm control could count it again
            if alert.kind not in ("delivery_failing", "digest"):
                identity = idempotency_key(alert.dedupe_key, alert.action, alert.fingerprint())
                # the squad's storm rows sit beside its webhook's rate shares: a counter write that is
                # due anyway also leases the share this post needs (one write instead of two)
                budget = getattr(self.teams, "budget", None) if url else None
                decision = self.storms.admit(
                    alert,
                    route.squad,
                    identity,
                    self.clock(),
                    webhook=webhook_ref(url).replace("#", "-") if url else "",
                    share=budget.share_lease(url) if budget is not None else None,
                )
                if decision.status == DIGEST:
                    if decision.schedule_digest:
                        self._schedule_digest(decision.window)
                    return "digest", {"detail": f"held for the digest of {decision.window.partition}"}
            if not url:
                payload = cards.fit(content, cards.adaptive_card_message)
                path = self.outbox.write("teams", alert.action, alert.dedupe_key, alert.fingerprint(), payload)
                return "outbox", {"detail": path.name}
            status = self.teams.post(url, cards.teams_payload(content, url))
            return "delivered", {"detail": f"{webhook_ref(url)} HTTP {status}"}

        return self._once(self._claim_key(alert, "teams"), "teams", post, claims)

    def _schedule_digest(self, window: StormWindow) -> None:
        delay = max(1, math.ceil((window.end - self.clock()).total_seconds()) + 2)
        message = {
            "type": "digest",
            "squad": window.squad,
            "window_start": window.start.isoformat(),
            "webhook": window.webhook,  # where the window's rows are (a webhook-<hash> partition, not the URL)
            "attempt": 1,
        }
        self.store.send(QUEUE, message, visibility_timeout=min(delay, MAX_VISIBILITY_SECONDS))
        self.storms.mark_digest_scheduled(window)

    def _handle_digest(self, message: dict[str, Any]) -> DeliveryOutcome:
        squad = str(message.get("squad") or "")
        try:
            start = datetime.fromisoformat(str(message["window_start"]))
        except (KeyError, ValueError):
            raise BadInputError("a digest message needs window_start (ISO timestamp)") from None
        window = StormWindow(squad, start, self.settings.alert_storm_window_minutes, str(message.get("webhook") or ""))
        attempt = int(message.get("attempt") or 1)
        outcome = DeliveryOutcome("digest", window.partition)
        held = self.storms.held_back(window)
        route = route_for(replace(held[0], owner=squad) if held else _placeholder(squad), self.routes)
        content = cards.digest_content(squad, held, window.minutes)
        url = route.teams_webhook_url

        def post() -> tuple[str, dict[str, Any]]:
            if not url:
                payload = cards.fit(content, cards.adaptive_card_message)
                path = self.outbox.write("teams", "digest", window.partition, window.partition, payload)
                return "outbox", {"detail": path.name}
            status = self.teams.post(url, cards.teams_payload(content, url))
            return "delivered", {"detail": f"{webhook_ref(url)} HTTP {status}"}

        try:
            if not held:
                result = ChannelResult("teams", "skipped", "no alert held back in this window")
            else:
                result = self._once(idempotency_key("digest", window.partition, "teams"), "teams", post)
        except StorageError:
            raise
        except TransientUpstreamError as err:
            result = ChannelResult("teams", "retry", err.detail, err.retry_after)
        except (UpstreamError, ForbiddenActionError) as err:
            result = ChannelResult("teams", "failed", err.detail, reason=_reason(err))
        outcome.results.append(result)
        self._follow_up(outcome, {**message, "channels": ["teams"]}, attempt, None)
        log.info("storm digest: %s", result.status, extra={"squad": squad, "alerts": len(held)})
        return outcome

    # -- ServiceNow --

    def _nothing_to_do(self, alert: Alert, channel: str) -> ChannelResult | None:
        """The result of a channel that has nothing to do for this alert (decided without I/O), or None."""
        if channel != "servicenow":
            return None
        if self.servicenow is None or alert.action == "open":
            if not alert.wants_incident():
                return ChannelResult("servicenow", "skipped", "no incident wanted")
        elif alert.incident is False:
            return ChannelResult("servicenow", "skipped", "incident explicitly not wanted")
        return None

    def servicenow_channel(
        self, alert: Alert, route: AlertRoute, *, claims: dict[str, str] | None = None
    ) -> ChannelResult:
        skip = self._nothing_to_do(alert, "servicenow")
        if skip is not None:
            return skip
        if self.servicenow is None:
            return self._once(
                self._claim_key(alert, "servicenow"), "servicenow", lambda: self._incident_outbox(alert, route), claims
            )
        return self._once(
            self._claim_key(alert, "servicenow"), "servicenow", lambda: self._incident(alert, route), claims
        )

    def _incident_outbox(self, alert: Alert, route: AlertRoute) -> tuple[str, dict[str, Any]]:
        if alert.action == "open":
            body = incidents.incident_fields(alert, route)
        elif alert.action == "resolve" and self.settings.servicenow_resolve_mode == "resolve":
            body = incidents.resolution(alert, self.settings.servicenow_close_code)
        else:
            body = incidents.work_note(alert)
        path = self.outbox.write("servicenow", alert.action, alert.dedupe_key, alert.fingerprint(), body)
        return "outbox", {"detail": path.name}

    def _incident(self, alert: Alert, route: AlertRoute) -> tuple[str, dict[str, Any]]:
        assert self.servicenow is not None
        sn = self.servicenow
        cid = incidents.correlation_id_for(alert.dedupe_key)
        # always look before creating: a repeat, or a create that timed out earlier, must not open a second one
        found = sn.find_active(cid)
        if alert.action == "resolve":
            if found is None:
                return "skipped", {"detail": "no active incident to resolve"}
            if self.settings.servicenow_resolve_mode == "resolve":
                sn.update(found["sys_id"], incidents.resolution(alert, self.settings.servicenow_close_code))
                return "delivered", {"detail": f"resolved {found.get('number')}", "number": found.get("number")}
            sn.update(found["sys_id"], incidents.work_note(alert))
            return "delivered", {"detail": f"noted clearance on {found.get('number')}", "number": found.get("number")}
        if found is not None:
            sn.update(found["sys_id"], incidents.work_note(alert))
            return "delivered", {"detail": f"work note on {found.get('number')}", "number": found.get("number")}
        if alert.action == "update" and not alert.wants_incident():
            return "skipped", {"detail": "no active incident to update"}
        created = sn.create(incidents.incident_fields(alert, route))
        return "delivered", {"detail": f"created {created.get('number')}", "number": created.get("number")}

    # -- retries, poison, delivery-failing --

    def backoff_seconds(self, attempt: int, retry_after: float | None) -> int:
        """Full-jitter exponential backoff for the retry after `attempt`; never sooner than Retry-After."""
        delay = backoff_delay(
            attempt,
            base=self.settings.alert_retry_base_seconds,
            cap=self.settings.alert_retry_max_seconds,
            retry_after=retry_after,
            rng=self.rng,
        )
        return min(MAX_VISIBILITY_SECONDS, math.ceil(max(delay, 1.0)))

    def _follow_up(self, outcome: DeliveryOutcome, message: dict[str, Any], attempt: int, alert: Alert | None) -> None:
        retry = [r for r in outcome.results if r.status == "retry"]
        failed = [r for r in outcome.results if r.status == "failed"]
        exhausted = [r for r in retry if r.counts_as_attempt and attempt >= self.settings.alert_max_attempts]
        for r in exhausted:
            r.status, r.reason = "failed", f"still failing after {attempt} attempts"
        retry = [r for r in retry if r not in exhausted]
        if retry:
            counted = any(r.counts_as_attempt for r in retry)
            next_attempt = attempt + 1 if counted else attempt
            delay = self.backoff_seconds(attempt, max((r.retry_after or 0.0) for r in retry))
            again = {**message, "channels": [r.channel for r in retry], "attempt": next_attempt}
            self.store.send(QUEUE, again, visibility_timeout=delay)
            outcome.requeued, outcome.delay_seconds = [r.channel for r in retry], delay
        dead = failed + exhausted
        if dead:
            errors = {r.channel: r.detail for r in dead}
            poison = {**message, "channels": [r.channel for r in dead], "attempt": attempt, "errors": errors}
            self.store.send(POISON, poison)
            outcome.poisoned = [r.channel for r in dead]
            log.error("alert delivery failed; message sent to %s", POISON, extra={"errors": errors})
            if alert is None or alert.kind != "delivery_failing":
                for r in dead:
                    self._report_failing(r)

    def _report_failing(self, failed: ChannelResult) -> None:
        """Tell the default route, by the other channel, that a channel is failing (once per channel, reason and day)."""
        other = "servicenow" if failed.channel == "teams" else "teams"
        reason = failed.reason or "failing"
        day = self.clock().date().isoformat()
        alert = Alert(
            kind="delivery_failing",
            severity="warning",
            title=f"Alert delivery to {'Teams' if failed.channel == 'teams' else 'ServiceNow'} is failing",
            resource_id=f"valueflow/alert-delivery/{failed.channel}",
            owner="",
            facts=(("Channel", failed.channel), ("Reason", reason), ("Day (UTC)", day)),
            links=(),
            dedupe_key=f"delivery-failing:{failed.channel}:{re.sub(r'[^a-z0-9]+', '-', reason.lower()).strip('-')}:{day}",
            incident=other == "servicenow",
            summary=f"Alerts that could not be delivered wait in the {POISON} queue: list them with "
            "`python -m shared.cli alerts outbox`, fix the cause, then `alerts replay-poison`.",
        )
        self.store.send(QUEUE, alert_message(alert, channels=[other]))


def _reason(err: Exception) -> str:
    """A short, stable reason (no per-alert detail) so one failing cause raises one report a day."""
    if isinstance(err, UpstreamAuthError):
        return "credentials refused (401/403)"
    if getattr(err, "kind", "") == "channel-not-configured":
        return "not configured (no outbox in Azure)"
    if isinstance(err, ForbiddenActionError):
        return "webhook host not allowed"
    return "request rejected (4xx)"


def _placeholder(squad: str) -> Alert:
    return Alert("digest", "info", "digest", "-", squad, (), (), "digest")
