"""Azure Resource Manager: one client for every ARM call the app makes, throttling done right.

- Credentials: `DefaultAzureCredential` (the managed identity in Azure). A loopback `ARM_ENDPOINT`
  (a local fake ARM in tests and demos) uses a static development bearer header instead, because
  the mgmt SDKs refuse bearer tokens over plain http.
- Throttling: a 429 is honoured with its `Retry-After` (seconds or an HTTP date) and pauses the
  subscription's writes for that long; other transient failures back off exponentially with
  jitter; a per-subscription token bucket (ARM refills ~10 writes/s) keeps us from hitting the
  limit in the first place. `RetryableErrorDueToAnotherOperation` (409, sometimes 429) is a
  transient conflict with another operation on the same resource, not throttling: it is retried
  with backoff and does not pause the subscription.
- When the wait would exceed `max_wait` the call raises `ArmThrottled`/`ArmTransientConflict`
  (both `TransientUpstreamError` with `retry_after`) so a queue invocation can give up and retry later.

`request(method, path, api_version, body)` is the generic entry point (approval actions use it
too); the policy methods build on it, and on azure-mgmt-policyinsights for policy states.
Remediation tasks use the REST API 2024-10-01 because azure-mgmt-policyinsights 1.0.1 cannot set
`resourceCount`, `parallelDeployments` or `failureThreshold`.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core import PipelineClient
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy, UserAgentPolicy
from azure.core.rest import HttpRequest

from shared.adapters.http import pooled_session, sdk_transport
from shared.errors import (
    ConflictError,
    NotFoundError,
    TransientUpstreamError,
    UpstreamAuthError,
    UpstreamError,
)
from shared.resource_ids import encode_resource_path
from shared.retry import backoff_delay, retry_after_from
from shared.retry import parse_retry_after as parse_retry_after  # re-exported: callers and tests use it here
from shared.settings import Settings, is_loopback_host

log = logging.getLogger(__name__)

REMEDIATION_API_VERSION = "2024-10-01"
RESOURCE_API_VERSION = "2021-04-01"
TRANSIENT_CONFLICT = "RetryableErrorDueToAnotherOperation"
DEV_TOKEN = "local-development-token"  # only ever sent to a loopback ARM_ENDPOINT
_WRITE_METHODS = {"PUT", "POST", "PATCH", "DELETE"}
_SUBSCRIPTION = re.compile(r"^/subscriptions/([^/]+)", re.IGNORECASE)

T = TypeVar("T")


class ArmThrottled(TransientUpstreamError):
    """ARM said 429 (too many requests) and the Retry-After is longer than we may wait now."""

    kind = "arm-throttled"
    title = "Azure Resource Manager throttled the request"


class ArmTransientConflict(TransientUpstreamError):
    """`RetryableErrorDueToAnotherOperation`: another operation holds the resource; retry later."""

    kind = "arm-transient-conflict"
    title = "Another operation holds the resource"


class ArmCredentialError(UpstreamAuthError):
    """No usable credential for ARM (DefaultAzureCredential found none, or it was refused): a configuration
    error. Never retried like a network blip; for CREDENTIAL_RECHECK_SECONDS after a failure, calls fail at
    once without asking the credential again."""

    kind = "arm-credential"
    title = "No usable Azure credential for Azure Resource Manager"


CREDENTIAL_RECHECK_SECONDS = 60.0
CREDENTIAL_HINT = (
    "in Azure give the Function App's managed identity its roles (AZURE_CLIENT_ID names a user-assigned one); "
    "locally run `az login`, or set VALUEFLOW_FAKE_ARM=true to use the dev fake ARM"
)


class StaticBearerPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Sets a fixed development bearer header: for a loopback ARM_ENDPOINT only."""

    def __init__(self, token: str = DEV_TOKEN) -> None:
        self._header = f"Bearer {token}"

    def on_request(self, request: PipelineRequest) -> None:  # type: ignore[type-arg]
        request.http_request.headers["Authorization"] = self._header


class _NoCredential:
    """Placeholder credential for SDK clients whose authentication_policy does the work."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise UpstreamAuthError("the static development credential has no token to give")


class WriteBudget:
    """Token bucket per subscription: `rate` writes/s refill, `burst` at most. Thread-safe.

    `take()` reserves a token and answers how long to wait before using it; a 429 `pause()`s the
    subscription until its Retry-After has passed."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = max(rate, 0.001)
        self.burst = max(burst, 1.0)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # subscription -> (tokens, at)
        self._paused: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, subscription: str) -> float:
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(subscription, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate) - 1.0
            self._buckets[subscription] = (tokens, now)
            wait = -tokens / self.rate if tokens < 0 else 0.0
            return max(wait, self._paused.get(subscription, 0.0) - now)

    def pause(self, subscription: str, seconds: float) -> None:
        with self._lock:
            until = self.clock() + seconds
            self._paused[subscription] = max(until, self._paused.get(subscription, 0.0))


@dataclass
class _Failure(Exception):
    status: int
    code: str
    message: str
    retry_after: float | None


def subscription_of(path: str) -> str:
    """The subscription a path belongs to (the budget key); `tenant` for management-group paths."""
    m = _SUBSCRIPTION.match(path)
    return m.group(1).lower() if m else "tenant"


class Arm:
    """The ARM client. Build it with `Arm.from_settings(settings)`; tests pass their own knobs."""

    def __init__(
        self,
        endpoint: str,
        *,
        auth_policy: Any,
        credential: Any = None,
        writes_per_second: float = 10.0,
        burst: float | None = None,
        max_attempts: int = 6,
        max_wait: float = 60.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        timeout: float = 30.0,
        session: Any = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.auth_policy = auth_policy
        self.credential = credential
        self.budget = WriteBudget(writes_per_second, burst if burst is not None else writes_per_second * 2, clock)
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.sleep = sleep
        self.rng = rng
        self.stats = {"requests": 0, "throttled": 0, "transient_conflicts": 0, "retries": 0, "waited_seconds": 0.0}
        self._stats_lock = threading.Lock()
        # pooled, no per-request environment/.netrc lookups; `session` lets the runtime share one
        self._transport = sdk_transport(session or pooled_session(), connection_timeout=5, read_timeout=timeout)
        self._client: PipelineClient[Any, Any] = PipelineClient(
            base_url=self.endpoint,
            policies=[UserAgentPolicy("valueflow-automations"), auth_policy],
            transport=self._transport,
        )
        self._policy_clients: dict[str, Any] = {}
        self._clock = clock
        self._credential_failure: tuple[float, str] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **knobs: Any) -> Arm:
        endpoint = settings.arm_endpoint
        if is_loopback_host(urlsplit(endpoint).hostname):
            auth: Any = StaticBearerPolicy()
            credential: Any = _NoCredential()
        else:
            from azure.core.pipeline.policies import BearerTokenCredentialPolicy
            from azure.identity import DefaultAzureCredential

            # its own warning is a page per failed attempt; ArmCredentialError says it in one line instead
            logging.getLogger("azure.identity").setLevel(logging.ERROR)
            credential = DefaultAzureCredential()
            auth = BearerTokenCredentialPolicy(credential, f"{endpoint}/.default")
        return cls(
            endpoint, auth_policy=auth, credential=credential, writes_per_second=settings.arm_writes_per_second, **knobs
        )

    # -- the generic call --

    def request(
        self,
        method: str,
        path: str,
        api_version: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        write: bool | None = None,
    ) -> Any:
        """Call ARM: `path` is an ARM id path (`/subscriptions/...`). Returns the JSON body (None if empty).

        Raises NotFoundError (404), ConflictError (409 that is not transient), UpstreamAuthError
        (401/403), ArmThrottled/ArmTransientConflict/TransientUpstreamError after the retries,
        UpstreamError otherwise."""
        method = method.upper()
        is_write = method in _WRITE_METHODS if write is None else write
        url = self.endpoint + encode_resource_path(path)  # no '..', '.' or empty segments: BadInputError
        query = {"api-version": api_version, **(params or {})}

        def attempt() -> Any:
            req = (
                HttpRequest(method, url, params=query, json=body)
                if body is not None
                else HttpRequest(method, url, params=query)
            )
            self._check_credential()
            try:
                resp = self._client.send_request(req)
            except ClientAuthenticationError as exc:
                raise self._credential_failed(exc) from None
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise _Failure(0, "NetworkError", str(exc).splitlines()[0][:200], None) from None
            if 200 <= resp.status_code < 300:
                text = resp.text()
                return json.loads(text) if text.strip() else None
            raise _failure_from(resp.status_code, resp.headers, resp.text())

        return self._with_retries(attempt, method, path, is_write)

    def _with_retries(self, attempt: Callable[[], T], method: str, path: str, is_write: bool) -> T:
        subscription = subscription_of(path)
        waited = 0.0
        for number in range(1, self.max_attempts + 1):
            if is_write:
                wait = self.budget.take(subscription)
                if wait > 0:
                    if waited + wait > self.max_wait:
                        raise ArmThrottled(
                            f"write budget of subscription {subscription} exhausted", retry_after=round(wait, 1)
                        )
                    self._sleep(wait)
                    waited += wait
            self._count("requests")
            try:
                return attempt()
            except _Failure as caught:
                failure = caught
                delay, error = self._classify(failure, method, path, number, subscription)
            if number == self.max_attempts or waited + delay > self.max_wait:
                error.retry_after = round(delay, 1)
                raise error
            log.warning(
                "ARM %s %s: %s (%s); retrying in %.1fs",
                method,
                path,
                failure.status,
                failure.code,
                delay,
                extra={"arm_status": failure.status, "arm_code": failure.code, "attempt": number},
            )
            self._count("retries")
            self._sleep(delay)
            waited += delay
        raise AssertionError("unreachable")

    def _classify(
        self, failure: _Failure, method: str, path: str, number: int, subscription: str
    ) -> tuple[float, TransientUpstreamError]:
        """How long to wait before the next attempt, and the error to raise if there is none; raises
        at once for failures that no retry can fix."""
        where = f"ARM {method} {path}"
        detail = f"{where}: HTTP {failure.status} {failure.code}: {failure.message}".strip()
        if failure.code == TRANSIENT_CONFLICT:
            self._count("transient_conflicts")
            return self._backoff(number), ArmTransientConflict(detail)
        if failure.status == 429:
            self._count("throttled")
            delay = failure.retry_after if failure.retry_after is not None else self._backoff(number)
            self.budget.pause(subscription, delay)
            return delay + self.rng() * min(1.0, delay * 0.1), ArmThrottled(detail)
        if failure.status == 0 or failure.status == 408 or failure.status >= 500:
            delay = failure.retry_after if failure.retry_after is not None else self._backoff(number)
            return delay, TransientUpstreamError(detail)
        if failure.status in (401, 403):
            raise UpstreamAuthError(detail)
        if failure.status == 404:
            raise NotFoundError(detail)
        if failure.status == 409:
            raise ConflictError(detail)
        raise UpstreamError(detail)

    def _check_credential(self) -> None:
        failure = self._credential_failure
        if failure is not None and self._clock() - failure[0] < CREDENTIAL_RECHECK_SECONDS:
            raise ArmCredentialError(failure[1])

    def _credential_failed(self, exc: ClientAuthenticationError) -> ArmCredentialError:
        """Remember a credential failure (first line only: DefaultAzureCredential's message is a page long)."""
        first = next((line.strip() for line in str(exc.message or exc).splitlines() if line.strip()), "")
        detail = f"no usable Azure credential for ARM {self.endpoint}: {first[:300]}; {CREDENTIAL_HINT}"
        with self._stats_lock:
            self._credential_failure = (self._clock(), detail)
        return ArmCredentialError(detail)

    def check_access(self, subscription_id: str = "") -> str:
        """Read-only connectivity check (doctor): acquire a token and read one subscription. Returns a
        description (`subscription <name> (<id>)`); raises the usual errors."""
        if subscription_id:
            doc = self.request("GET", f"/subscriptions/{subscription_id}", "2022-12-01")
        else:
            listing = self.request("GET", "/subscriptions", "2022-12-01") or {}
            subs = listing.get("value") or []
            if not subs:
                return "token accepted; the identity can read no subscription (give it Reader on the targets)"
            doc = subs[0]
        doc = doc or {}
        return f"subscription {doc.get('displayName', '?')} ({doc.get('subscriptionId', subscription_id)}) readable"

    def _backoff(self, number: int) -> float:
        # "equal jitter": never zero, never in lockstep
        return backoff_delay(number, base=self.backoff_base, cap=self.backoff_cap, jitter="equal", rng=self.rng)

    def _sleep(self, seconds: float) -> None:
        with self._stats_lock:
            self.stats["waited_seconds"] += seconds
        self.sleep(seconds)

    def _count(self, name: str) -> None:
        with self._stats_lock:
            self.stats[name] += 1

    # -- generic resources --

    def resource_tags(self, resource_id: str) -> dict[str, str]:
        """Tags of a resource (generic resources API 2021-04-01); {} when the resource is gone."""
        try:
            doc = self.request("GET", resource_id, RESOURCE_API_VERSION)
        except NotFoundError:
            return {}
        tags = (doc or {}).get("tags") or {}
        return {str(k): str(v) for k, v in tags.items()}

    # -- policy --

    def policy_effect(self, resource_id: str, assignment_id: str, definition_reference_id: str = "") -> str:
        """The effect (`policyDefinitionAction`, e.g. `deployifnotexists`) of the resource's latest policy
        state for the assignment (and definition reference), through azure-mgmt-policyinsights; "" if none."""
        from azure.mgmt.policyinsights.models import QueryOptions

        encode_resource_path(resource_id)  # refuse dot and empty segments before the SDK builds a URL
        subscription = subscription_of(resource_id)
        client = self._policy_client(subscription)
        query = f"policyAssignmentId eq '{_odata(assignment_id.lower())}'"
        if definition_reference_id:
            query += f" and policyDefinitionReferenceId eq '{_odata(definition_reference_id.lower())}'"

        def attempt() -> str:
            self._check_credential()
            try:
                pages = client.policy_states.list_query_results_for_resource(
                    "latest", resource_id, query_options=QueryOptions(filter=query, top=1)
                )
                for state in pages:
                    return str(state.policy_definition_action or "")
                return ""
            except ClientAuthenticationError as exc:
                raise self._credential_failed(exc) from None
            except HttpResponseError as exc:
                status = exc.status_code or 0
                headers = getattr(exc.response, "headers", None) or {}
                code = getattr(exc.error, "code", "") or ""
                raise _Failure(status, str(code), str(exc.message or "")[:300], retry_after_from(headers)) from None
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise _Failure(0, "NetworkError", str(exc).splitlines()[0][:200], None) from None

        return self._with_retries(
            attempt, "POST", f"{resource_id}/providers/Microsoft.PolicyInsights/policyStates", False
        )

    def _policy_client(self, subscription: str) -> Any:
        from azure.mgmt.policyinsights import PolicyInsightsClient

        if subscription not in self._policy_clients:
            self._policy_clients[subscription] = PolicyInsightsClient(
                credential=self.credential or _NoCredential(),
                subscription_id=subscription if subscription != "tenant" else "00000000-0000-0000-0000-000000000000",
                base_url=self.endpoint,
                authentication_policy=self.auth_policy,
                retry_total=0,  # our retry loop honours Retry-After and the write budget
                transport=self._transport,
            )
        return self._policy_clients[subscription]

    def put_remediation(
        self,
        scope: str,
        name: str,
        assignment_id: str,
        definition_reference_id: str,
        *,
        resource_count: int,
        parallel_deployments: int,
        failure_threshold: float,
    ) -> dict[str, Any]:
        """Create (or re-PUT, idempotently) a remediation task for existing non-compliant resources.

        REST API 2024-10-01: sets resourceCount, parallelDeployments and failureThreshold, which the
        stable SDK (azure-mgmt-policyinsights 1.0.1) cannot. Returns ARM's remediation document."""
        properties: dict[str, Any] = {
            "policyAssignmentId": assignment_id,
            "resourceDiscoveryMode": "ExistingNonCompliant",
            "resourceCount": resource_count,
            "parallelDeployments": parallel_deployments,
            "failureThreshold": {"percentage": failure_threshold},
        }
        if definition_reference_id:  # required for initiatives, absent for a single policy
            properties["policyDefinitionReferenceId"] = definition_reference_id
        doc = self.request("PUT", _remediation_path(scope, name), REMEDIATION_API_VERSION, {"properties": properties})
        return dict(doc or {})

    def get_remediation(self, scope: str, name: str) -> dict[str, Any]:
        """ARM's remediation document (properties.provisioningState, deploymentStatus, ...)."""
        return dict(self.request("GET", _remediation_path(scope, name), REMEDIATION_API_VERSION) or {})

    def remediation_deployments(self, scope: str, name: str, *, limit: int = 200) -> list[dict[str, Any]]:
        """The deployments of a remediation task (`listDeployments`), following nextLink up to `limit`."""
        out: list[dict[str, Any]] = []
        doc = self.request(
            "POST", _remediation_path(scope, name) + "/listDeployments", REMEDIATION_API_VERSION, write=False
        )
        while doc:
            out.extend(doc.get("value") or [])
            link = doc.get("nextLink")
            if not link or len(out) >= limit:
                break
            parts = urlsplit(link)
            params = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p and not p.startswith("api-"))
            doc = self.request("POST", parts.path, REMEDIATION_API_VERSION, params=params, write=False)
        return out[:limit]


def _remediation_path(scope: str, name: str) -> str:
    return f"{scope.rstrip('/')}/providers/Microsoft.PolicyInsights/remediations/{name}"


def _odata(value: str) -> str:
    return value.replace("'", "''")


def _failure_from(status: int, headers: Any, text: str) -> _Failure:
    code, message = "", ""
    try:
        doc = json.loads(text) if text.strip() else {}
        err = doc.get("error", doc) if isinstance(doc, dict) else {}
        code, message = str(err.get("code", "")), str(err.get("message", ""))
    except (ValueError, AttributeError):
        message = text[:200]
    return _Failure(status, code, message[:300], retry_after_from(headers))
