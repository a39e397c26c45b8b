"""Calling a Logic App back, and only where it is allowed (no SSRF).

A `callbackUrl` arrives in a request body, so it is attacker-controlled until proven otherwise. It
is called only if `callback_problem()` finds nothing wrong:
- https, no user:password, no fragment;
- its host matches one of `CALLBACK_ALLOWED_HOSTS` (shell-style patterns: `*.logic.azure.com`);
- plain http and loopback hosts only when a loopback host is listed explicitly (local runs and
  tests set `CALLBACK_ALLOWED_HOSTS=127.0.0.1`); an IP literal otherwise never matches a pattern.
The check runs when the URL is stored and again just before it is called; redirects are not
followed, and the URL (it carries a SAS signature) is never logged or returned.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
from typing import Any
from urllib.parse import urlsplit

import requests

from shared.adapters.http import pooled_session
from shared.errors import TransientUpstreamError, UpstreamError
from shared.retry import retry_after_from
from shared.settings import is_loopback_host

log = logging.getLogger(__name__)


def callback_problem(url: str, allowed_hosts: tuple[str, ...]) -> str | None:
    """Why this URL may not be called, or None when it may."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an absolute https URL"
    if parts.username or parts.password:
        return "must not carry credentials"
    patterns = tuple(p.strip().lower() for p in allowed_hosts if p.strip())
    loopback = is_loopback_host(host)
    if parts.scheme == "http" and not loopback:
        return "must use https"
    if _is_ip(host) or loopback:
        # IP literals and loopback only when listed verbatim, never through a wildcard
        return None if host in patterns else f"host {host} is not in CALLBACK_ALLOWED_HOSTS"
    if any(fnmatch.fnmatchcase(host, p) for p in patterns):
        return None
    return f"host {host} is not in CALLBACK_ALLOWED_HOSTS"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def redacted(url: str) -> str:
    """scheme://host/path without the query (where the SAS signature is): safe for logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{parts.path}"


class LogicAppCallback:
    """POSTs JSON to an allowed Logic App URL (a waiting webhook action or an HTTP trigger)."""

    def __init__(self, allowed_hosts: tuple[str, ...], *, timeout: float = 10.0, session: Any = None) -> None:
        self.allowed_hosts = allowed_hosts
        self.timeout = timeout
        self.session = session or pooled_session()

    def post(self, url: str, body: dict[str, Any], *, what: str) -> int:
        """POST once; returns the status. TransientUpstreamError on 429/5xx/timeouts, UpstreamError on 4xx."""
        problem = callback_problem(url, self.allowed_hosts)
        if problem:
            raise UpstreamError(f"{what}: refusing to call {redacted(url)}: {problem}")
        try:
            resp = self.session.post(url, json=body, timeout=self.timeout, allow_redirects=False)
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
