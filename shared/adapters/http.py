"""Pooled HTTP sessions for every adapter (Teams, ServiceNow, Logic Apps, ARM, Azure Storage).

`requests` with `trust_env=True` (its default) reads the environment and looks for `~/.netrc` on
every request: a quarter of the policy worker's CPU went there. `pooled_session()` turns that
off and does the lookup once instead: proxies (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`) are
resolved per host and cached, and a CA bundle from `REQUESTS_CA_BUNDLE`/`CURL_CA_BUNDLE` is read
at construction. Its connection pool is sized for the worker's threads, so concurrent
invocations reuse connections instead of opening new ones.

`sdk_transport()` wraps such a session for the Azure SDK clients (storage, ARM) (azure-core's
`RequestsTransport`), with the connect and read timeouts every client must have.
"""

from __future__ import annotations

import threading
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

POOL_SIZE = 64  # >= the Python worker's thread count (PYTHON_THREADPOOL_THREAD_COUNT) times clients sharing it


class PooledSession(requests.Session):
    """A `requests.Session` that never reads the environment per request (see the module doc)."""

    def __init__(self, pool_size: int = POOL_SIZE, adapter_class: type[HTTPAdapter] = HTTPAdapter) -> None:
        super().__init__()
        self.trust_env = False
        adapter = adapter_class(pool_connections=16, pool_maxsize=pool_size, max_retries=0)
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self._env_proxies = {k: v for k, v in urllib.request.getproxies().items() if v}
        # the CA bundle requests would pick from the environment, looked up once
        found = requests.Session().merge_environment_settings("https://ca-bundle.invalid", {}, None, True, None)
        verify = found.get("verify")
        self._ca_bundle = verify if isinstance(verify, str) else None
        self._proxy_cache: dict[tuple[str, str], dict[str, str]] = {}
        self._cache_lock = threading.Lock()

    @property
    def uses_proxies(self) -> bool:
        """True when the environment names a proxy (for any host)."""
        return any(k != "no" for k in self._env_proxies)

    @property
    def ca_bundle(self) -> str | None:
        """The CA bundle the environment names (`REQUESTS_CA_BUNDLE`/`CURL_CA_BUNDLE`), if any."""
        return self._ca_bundle

    def proxies_for(self, url: str) -> dict[str, str]:
        """The environment's proxies for this URL's host (NO_PROXY honoured), looked up once per host."""
        if not self._env_proxies:
            return {}
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        with self._cache_lock:
            found = self._proxy_cache.get(key)
        if found is None:
            no_proxy = self._env_proxies.get("no")
            if requests.utils.should_bypass_proxies(url, no_proxy=no_proxy):
                found = {}
            else:
                found = {k: v for k, v in self._env_proxies.items() if k != "no"}
            with self._cache_lock:
                self._proxy_cache[key] = found
        return found

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if not merged.get("proxies") and url:
            merged["proxies"] = self.proxies_for(str(url))
        # https only: for a string `verify` requests checks the path on disk on every request
        if merged.get("verify") is True and self._ca_bundle and str(url).lower().startswith("https:"):
            merged["verify"] = self._ca_bundle
        return merged


def pooled_session(pool_size: int = POOL_SIZE) -> PooledSession:
    """A new pooled session (build one per process per peer family, in `Runtime`)."""
    return PooledSession(pool_size)


def sdk_transport(session: requests.Session, *, connection_timeout: float, read_timeout: float) -> Any:
    """An azure-core transport over `session` that the Azure SDK clients can share."""
    from azure.core.pipeline.transport import RequestsTransport

    return RequestsTransport(
        session=session,
        session_owner=False,
        connection_timeout=connection_timeout,
        read_timeout=read_timeout,
    )
