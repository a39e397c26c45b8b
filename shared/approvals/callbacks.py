"""Calling a Logic App back, and only where it is allowed (no SSRF).

A `callbackUrl` arrives in a request body, so it is attacker-controlled until proven otherwise. It
is called only if `callback_problem()` finds nothing wrong (the rules are `shared.urls`):
- https, no user:password, no fragment, a plainly written host (`[a-z0-9.-]`, no backslash or
  percent tricks), parsed the same by urllib3 (the parser that sends) and the standard library,
  and the same host in the request requests prepares;
- its host matches one of `CALLBACK_ALLOWED_HOSTS` (shell-style patterns: `*.logic.azure.com`);
- IP literals and loopback hosts only when listed verbatim (local runs and tests set
  `CALLBACK_ALLOWED_HOSTS=127.0.0.1`), never through a wildcard; plain http only for loopback.
The check runs when the URL is stored and again just before it is called; the connection itself
refuses a non-public address unless the host is listed verbatim (resolve-and-pin, per connection),
redirects are not followed, and the URL (it carries a SAS signature) is never logged or returned.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from shared.errors import ForbiddenActionError, TransientUpstreamError, UpstreamError
from shared.retry import retry_after_from
from shared.urls import outbound_problem, pinned_session, redact_url

log = logging.getLogger(__name__)

SETTING = "CALLBACK_ALLOWED_HOSTS"


def callback_problem(url: str, allowed_hosts: tuple[str, ...]) -> str | None:
    """Why this URL may not be called, or None when it may."""
    return outbound_problem(url, allowed_hosts, setting=SETTING)


def redacted(url: str) -> str:
    """scheme://host/path without the query (where the SAS signature is): safe for logs."""
    return redact_url(url)


class LogicAppCallback:
    """POSTs JSON to an allowed Logic App URL (a waiting webhook action or an HTTP trigger)."""

    def __init__(self, allowed_hosts: tuple[str, ...], *, timeout: float = 10.0, session: Any = None) -> None:
        self.allowed_hosts = allowed_hosts
        self.timeout = timeout
        self.session = session or pinned_session(allowed_hosts)

    def post(self, url: str, body: dict[str, Any], *, what: str) -> int:
        """POST once; returns the status. TransientUpstreamError on 429/5xx/timeouts, UpstreamError on 4xx."""
        problem = callback_problem(url, self.allowed_hosts)
        if problem:
            raise UpstreamError(f"{what}: refusing to call {redacted(url)}: {problem}")
        try:
            resp = self.session.post(url, json=body, timeout=self.timeout, allow_redirects=False)
        except ForbiddenActionError as err:  # the name resolved to a private address: permanent
            raise UpstreamError(f"{what}: refusing to call {redacted(url)}: {err.detail}") from None
        except requests.RequestException as exc:
            raise TransientUpstreamError(f"{what}: {redacted(url)} unreachable: {type(exc).__name__}") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            retry_after = retry_after_from(resp.headers)
            raise TransientUpstreamError(
                f"{what}: {redacted(url)} answered {resp.status_code}", retry_after=retry_after
            )
        if resp.status_code >= 300:
            raise UpstreamError(f"{what}: {redacted(url)} answered {resp.status_code}")
        log.info("%s: %s answered %s", what, redacted(url), resp.status_code)
        return int(resp.status_code)
