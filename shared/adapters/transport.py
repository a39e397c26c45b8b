"""An azure-core transport for the table and queue clients on the standard library's `http.client`.

Why: a storage request costs the worker about 0.8 ms of CPU through azure-core's `RequestsTransport`,
a third of it in `requests` and `urllib3` (session merging, adapters, pool bookkeeping). Every alert
makes about five such requests, every policy delivery four, all under one GIL. Sent on `http.client`
directly the same request costs about 0.45 ms (`python -m bench.bench_transport`).

What it does, and what it leaves to the `RequestsTransport` it is given as a fallback:
- one keep-alive connection per thread and host (the worker's threads never share a socket, so no
  pool and no lock); a connection the server closed while idle is noticed before it is reused, and
  one idle for over a minute is replaced (Azure's load balancer drops idle flows silently, by
  default after 4 minutes);
- the connect timeout while connecting, the read timeout on every read after it;
- TLS verified against the CA bundle `requests` would use (`REQUESTS_CA_BUNDLE`/`CURL_CA_BUNDLE`,
  else certifi's), with the host name checked;
- errors mapped as `RequestsTransport` maps them: nothing sent or a connect failure ->
  `ServiceRequestError` (retried by the SDK for any method), a failure after the request went out ->
  `ServiceResponseError` ("Connection aborted" when the peer reset or closed the connection), and the
  timeout variants of both;
- a rest request asked for as a stream (the table transaction's multipart answer) is read whole
  and iterates from memory; legacy streamed requests, file uploads and bodies that are not bytes or
  text go to the fallback, as does every request when the environment names a proxy (see
  `storage_transport`). Blobs keep the `RequestsTransport`: their downloads are real streams.
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import (
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpRequest as LegacyRequest
from azure.core.pipeline.transport import HttpTransport
from azure.core.pipeline.transport._base import HttpClientTransportResponse
from azure.core.rest._http_response_impl import RestHttpClientTransportResponse

from shared.adapters.http import PooledSession, sdk_transport

# A connection idle longer than this is replaced, not reused: Azure Load Balancer drops an outbound
# flow idle for its timeout (4 minutes by default) silently, without a reset to either end, and a
# request sent on it would wait out the read timeout (30 s) instead of failing fast.
MAX_IDLE_SECONDS = 60.0


class _ReadTimeout:
    """Connects within the connection's `timeout`, then reads with `read_timeout`."""

    read_timeout: float = 30.0
    sock: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.sock.settimeout(self.read_timeout)


class _Connection(_ReadTimeout, http.client.HTTPConnection):
    pass


class _TLSConnection(_ReadTimeout, http.client.HTTPSConnection):
    pass


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """True when an idle connection was closed by the server (readable with nothing asked: EOF)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def default_tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Certificate and host name verified, against the bundle `requests` would use."""
    if ca_bundle is None:
        try:
            import certifi

            ca_bundle = certifi.where()
        except ImportError:  # the system store, as http.client does by default
            ca_bundle = None
    return ssl.create_default_context(cafile=ca_bundle)


class _ReadWhole(RestHttpClientTransportResponse):
    """A rest response read whole on arrival; asked for as a stream (the table transaction's
    multipart answer is), it iterates from memory. Table and queue answers are small."""

    def iter_bytes(self, **kwargs: Any) -> Iterator[bytes]:
        yield self.read()

    def iter_raw(self, **kwargs: Any) -> Iterator[bytes]:
        yield self.read()


class StdlibTransport(HttpTransport):  # type: ignore[type-arg]
    """azure-core transport on `http.client` (see the module doc). Thread-safe: each thread has its
    own connections. `fallback` (a `RequestsTransport`) takes what this one does not handle."""

    def __init__(
        self,
        *,
        connection_timeout: float,
        read_timeout: float,
        fallback: HttpTransport,  # type: ignore[type-arg]
        tls_context: ssl.SSLContext,
        max_idle: float = MAX_IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection_timeout = connection_timeout
        self.max_idle = max_idle
        self.clock = clock
        self.read_timeout = read_timeout
        self.fallback = fallback
        self._tls = tls_context
        self._local = threading.local()
        self._all: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()  # every live thread's
        self._all_lock = threading.Lock()

    def __enter__(self) -> StdlibTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()

    def open(self) -> None:
        pass

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = list(self._all), weakref.WeakSet()
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        conns: dict[tuple[str, str], http.client.HTTPConnection] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = _TLSConnection(netloc, timeout=self.connection_timeout, context=self._tls)
            else:
                conn = _Connection(netloc, timeout=self.connection_timeout)
            conns[(scheme, netloc)] = conn
            with self._all_lock:
                self._all.add(conn)
        return conn

    def send(self, request: Any, **kwargs: Any) -> Any:
        """Send `request` (an azure-core legacy or rest request) and return the matching response type."""
        body = request.data if not request.files else None
        rest = _is_rest(request)
        streamed = kwargs.get("stream") and not rest  # a rest answer is read whole and iterates from memory
        if streamed or request.files or not (body is None or isinstance(body, (bytes, str))):
            return self.fallback.send(request, **kwargs)
        if isinstance(body, str):
            body = body.encode("utf-8")
        url = urlsplit(request.url)
        if url.scheme not in ("http", "https"):
            raise ServiceRequestError(f"unsupported URL scheme {url.scheme!r}")
        target = (url.path or "/") + ("?" + url.query if url.query else "")
        read_timeout = kwargs.get("read_timeout", self.read_timeout)
        conn = self._connection(url.scheme, url.netloc)
        conn.read_timeout = read_timeout  # type: ignore[attr-defined]
        now = self.clock()
        if _dropped(conn) or now - getattr(conn, "last_used", now) > self.max_idle:
            conn.close()  # http.client reconnects on the next request
        elif conn.sock is not None:
            conn.sock.settimeout(read_timeout)
        conn.last_used = now  # type: ignore[attr-defined]
        try:
            conn.request(request.method, target, body=body, headers=dict(request.headers))
        except TimeoutError as exc:
            conn.close()
            raise ServiceRequestTimeoutError(f"connection to {url.netloc} timed out", error=exc) from exc
        except ssl.SSLError as exc:
            conn.close()
            raise ServiceRequestError(f"TLS with {url.netloc} failed: {exc}", error=exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ServiceRequestError(f"cannot send to {url.netloc}: {exc}", error=exc) from exc
        try:
            answer = conn.getresponse()
            if rest:
                response: Any = _ReadWhole(request=request, internal_response=answer)
                response.read()
            else:
                response = HttpClientTransportResponse(request, answer)
                response.body()
        except TimeoutError as exc:
            conn.close()
            raise ServiceResponseTimeoutError(
                f"no answer from {url.netloc} within {read_timeout:g}s", error=exc
            ) from exc
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            conn.close()  # "aborted": the storage adapter repeats a conditional write once on it
            raise ServiceResponseError(f"Connection aborted by {url.netloc}: {exc!r}", error=exc) from exc
        return response


def storage_transport(session: PooledSession, *, connection_timeout: float, read_timeout: float) -> Any:
    """The transport of the table and queue clients: `StdlibTransport` over `session`'s fallback, or
    that `RequestsTransport` alone when the environment names a proxy (which `requests` honours)."""
    fallback = sdk_transport(session, connection_timeout=connection_timeout, read_timeout=read_timeout)
    if session.uses_proxies:
        return fallback
    return StdlibTransport(
        connection_timeout=connection_timeout,
        read_timeout=read_timeout,
        fallback=fallback,
        tls_context=default_tls_context(session.ca_bundle),
    )


def _is_rest(request: Any) -> bool:
    return not isinstance(request, LegacyRequest)
