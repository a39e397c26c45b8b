"""Cost Management Query API (`azure-mgmt-costmanagement`): daily amortized cost by resource and owner tag.

The second cost source, for teams without exports. One POST per window of at most 31 days (the API's limit
for daily granularity with grouping), following `nextLink` pages (POSTed with the same body). A 429 carries
`x-ms-ratelimit-microsoft.costmanagement-{qpu,entity,tenant}-retry-after` (seconds): we wait for the longest
and retry a few times, then give up with TransientUpstreamError. A loopback `ARM_ENDPOINT` (tests, local fakes)
uses a static development bearer token: the SDK refuses real bearer tokens over plain http.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlparse

from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.rest import HttpRequest

from shared.errors import TransientUpstreamError, UpstreamAuthError, UpstreamError
from shared.retry import backoff_delay, parse_retry_after
from shared.settings import Settings, is_loopback_host

log = logging.getLogger(__name__)

MAX_DAYS_PER_QUERY = 31
MAX_ATTEMPTS = 4
MAX_WAIT_SECONDS = 60.0
RETRY_AFTER_HEADERS = (
    "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-tenant-retry-after",
    "retry-after",
)
DEV_TOKEN = "local-dev-token"  # noqa: S105 - a placeholder the local fakes accept, not a credential


class StaticBearerPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Sets a fixed development bearer header (loopback ARM endpoints only)."""

    def on_request(self, request: PipelineRequest) -> None:  # type: ignore[type-arg]
        request.http_request.headers["Authorization"] = f"Bearer {DEV_TOKEN}"


class _NoCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:  # pragma: no cover - never called with the static policy
        raise RuntimeError("the static development policy authenticates loopback calls")


@dataclass(frozen=True)
class QueryPage:
    columns: list[dict[str, Any]]
    rows: list[list[Any]]


class CostManagementQuery:
    """Daily amortized cost of a scope grouped by ResourceId and one tag key."""

    def __init__(self, client: Any, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> CostManagementQuery:
        from azure.mgmt.costmanagement import CostManagementClient

        endpoint = settings.arm_endpoint
        options: dict[str, Any] = {"retry_total": 0}  # 429s are ours to pace: the SDK ignores Cost Management's headers
        if is_loopback_host(urlparse(endpoint).hostname):
            client = CostManagementClient(
                _NoCredential(), base_url=endpoint, authentication_policy=StaticBearerPolicy(), **options
            )
        else:
            from azure.identity import DefaultAzureCredential

            client = CostManagementClient(DefaultAzureCredential(), base_url=endpoint, **options)
        return cls(client, sleep=sleep)

    def daily_costs(self, scope: str, start: date, end: date, tag_key: str) -> QueryPage:
        """Every row of daily amortized cost for `scope` over start..end (inclusive), all windows and pages."""
        columns: list[dict[str, Any]] = []
        rows: list[list[Any]] = []
        for window_start, window_end in _windows(start, end):
            body = _query_body(window_start, window_end, tag_key)
            for page in self._pages(scope, body):
                columns = columns or page.columns
                rows.extend(page.rows)
        return QueryPage(columns, rows)

    def _pages(self, scope: str, body: dict[str, Any]) -> Iterator[QueryPage]:
        result = self._with_retries(lambda: self._client.query.usage(scope.strip("/"), body))
        page = _page(result)
        yield page
        next_link = _next_link(result)
        while next_link:
            link = next_link
            doc = self._with_retries(lambda link=link: self._post(link, body))  # type: ignore[misc]
            yield QueryPage(
                list(doc.get("properties", {}).get("columns", [])), list(doc.get("properties", {}).get("rows", []))
            )
            next_link = doc.get("properties", {}).get("nextLink") or doc.get("nextLink")

    def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self._client.send_request(HttpRequest("POST", url, json=body))
        if response.status_code >= 400:
            raise HttpResponseError(response=response)
        return dict(response.json())

    def _with_retries(self, call: Callable[[], Any]) -> Any:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return call()
            except HttpResponseError as exc:
                status = exc.status_code or 0
                if status in (401, 403):
                    raise UpstreamAuthError(f"Cost Management refused the query ({status})") from exc
                if status != 429 and status < 500:
                    raise UpstreamError(f"Cost Management query failed ({status}): {_message(exc)}") from exc
                wait = (
                    _retry_after(exc)
                    if status == 429
                    else backoff_delay(attempt, base=2.0, cap=MAX_WAIT_SECONDS, jitter="equal")
                )
                if attempt == MAX_ATTEMPTS or wait > MAX_WAIT_SECONDS:
                    raise TransientUpstreamError(
                        f"Cost Management query throttled or unavailable ({status}) after {attempt} attempt(s)",
                        retry_after=wait,
                    ) from exc
                log.info("cost query throttled, waiting", extra={"status": status, "wait_s": wait})
                self._sleep(wait)
            except AzureError as exc:
                raise TransientUpstreamError(f"Cost Management unreachable: {str(exc).splitlines()[0][:200]}") from exc
        raise AssertionError("unreachable")


def _windows(start: date, end: date) -> Iterator[tuple[date, date]]:
    cursor = start
    while cursor <= end:
        stop = min(end, cursor + timedelta(days=MAX_DAYS_PER_QUERY - 1))
        yield cursor, stop
        cursor = stop + timedelta(days=1)


def _query_body(start: date, end: date, tag_key: str) -> dict[str, Any]:
    return {
        "type": "AmortizedCost",
        "timeframe": "Custom",
        "timePeriod": {"from": f"{start.isoformat()}T00:00:00Z", "to": f"{end.isoformat()}T23:59:59Z"},
        "dataset": {
            "granularity": "Daily",
            "aggregation": {"totalCost": {"name": "Cost", "function": "Sum"}},
            "grouping": [{"type": "Dimension", "name": "ResourceId"}, {"type": "TagKey", "name": tag_key}],
        },
    }


def _page(result: Any) -> QueryPage:
    if result is None:
        return QueryPage([], [])
    doc = result.as_dict() if hasattr(result, "as_dict") else dict(result)
    props = doc.get("properties") or doc
    return QueryPage(list(props.get("columns") or []), list(props.get("rows") or []))


def _next_link(result: Any) -> str | None:
    if result is None:
        return None
    doc = result.as_dict() if hasattr(result, "as_dict") else dict(result)
    props = doc.get("properties") or {}
    return props.get("nextLink") or props.get("next_link") or None


def _retry_after(exc: HttpResponseError) -> float:
    headers = getattr(exc.response, "headers", None) or {}
    named = {name: headers.get(name) for name in RETRY_AFTER_HEADERS if headers.get(name) is not None}
    waits = [w for w in (parse_retry_after(v) for v in named.values()) if w is not None]
    return max(waits) if waits else 5.0


def _message(exc: HttpResponseError) -> str:
    return (str(exc.message or exc) or "").splitlines()[0][:200]
