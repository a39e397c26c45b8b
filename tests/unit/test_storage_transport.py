"""The table and queue clients' `http.client` transport, against a raw local HTTP/1.1 peer whose
connection behaviour each test chooses (keep-alive, idle close, reset, silence).

The transport's normal path (every table and queue operation) runs in every Azurite test; these
tests cover what Azurite does not do on demand."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import (
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpRequest as LegacyRequest
from azure.core.rest import HttpRequest

from shared.adapters.http import pooled_session
from shared.adapters.transport import StdlibTransport, default_tls_context, storage_transport


class Peer:
    """A minimal HTTP/1.1 server. `mode`: "keep" answers and keeps the connection, "close-idle"
    answers and closes it right after (as a server dropping an idle connection), "reset" resets
    without answering, "silent" never answers."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.mode = "keep"
        self.connections = 0
        self.bodies: list[bytes] = []
        self.peer_ports: list[int] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def https_url(self, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, addr = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn, addr[1]), daemon=True).start()

    def _serve(self, conn: socket.socket, port: int) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self._answer(conn, port)
        except OSError:  # the test stopped the peer, or the client refused our certificate
            conn.close()

    def _answer(self, conn: socket.socket, port: int) -> None:
        buffered = b""
        while True:
            while b"\r\n\r\n" not in buffered:
                chunk = conn.recv(65536)
                if not chunk:
                    conn.close()
                    return
                buffered += chunk
            head, _, buffered = buffered.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffered) < length:
                buffered += conn.recv(65536)
            body, buffered = buffered[:length], buffered[length:]
            self.bodies.append(body)
            self.peer_ports.append(port)
            if self.mode == "silent":
                time.sleep(5)
                return
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            answer = b'{"ok": true}'
            conn.sendall(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nx-ms-request-id: r1\r\n"
                + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                + answer
            )
            if self.mode == "close-idle":
                conn.close()
                return

    def stop(self) -> None:
        self._sock.close()
        for conn in self._open:
            conn.close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    server = Peer()
    yield server
    server.stop()


class Fallback:
    """Stands in for the RequestsTransport fallback: records what it was handed."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, request: Any, **kwargs: Any) -> str:
        self.sent.append((request, kwargs))
        return "fallback"


def _transport(fallback: Any = None, read_timeout: float = 5.0) -> StdlibTransport:
    return StdlibTransport(
        connection_timeout=2.0,
        read_timeout=read_timeout,
        fallback=fallback or Fallback(),
        tls_context=default_tls_context(None),
    )


def test_requests_from_one_thread_share_one_kept_alive_connection(peer: Peer) -> None:
    transport = _transport()
    for n in range(5):
        response = transport.send(HttpRequest("PUT", f"{peer.url}/Tables", content=f'{{"n": {n}}}'.encode()))
        assert response.status_code == 201
        assert response.json() == {"ok": True}
        assert response.headers["X-MS-REQUEST-ID"] == "r1"  # case-insensitive, as the SDK reads it
    assert peer.connections == 1
    assert peer.bodies == [f'{{"n": {n}}}'.encode() for n in range(5)]


def test_each_thread_has_its_own_connection(peer: Peer) -> None:
    transport = _transport()

    def three() -> None:
        for _ in range(3):
            transport.send(HttpRequest("GET", f"{peer.url}/q"))

    threads = [threading.Thread(target=three) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peer.connections == 4
    assert len(peer.bodies) == 12


def test_a_connection_the_server_dropped_while_idle_is_reopened_not_failed(peer: Peer) -> None:
    peer.mode = "close-idle"
    transport = _transport()
    for _ in range(3):
        assert transport.send(HttpRequest("POST", f"{peer.url}/t", content=b"{}")).status_code == 201
        time.sleep(0.05)  # the server's close arrives before the next request
    assert peer.connections == 3
    assert len(peer.bodies) == 3  # every request reached the server exactly once


def test_a_connection_idle_for_longer_than_a_minute_is_replaced_not_reused(peer: Peer) -> None:
    # a flow Azure's SNAT dropped silently would only fail after the read timeout
    now = [1000.0]
    transport = StdlibTransport(
        connection_timeout=2.0,
        read_timeout=5.0,
        fallback=Fallback(),
        tls_context=default_tls_context(None),
        clock=lambda: now[0],
    )
    transport.send(HttpRequest("GET", f"{peer.url}/t"))
    now[0] += 59
    transport.send(HttpRequest("GET", f"{peer.url}/t"))
    assert peer.connections == 1
    now[0] += 61
    transport.send(HttpRequest("GET", f"{peer.url}/t"))
    assert peer.connections == 2


def test_legacy_requests_get_a_legacy_response(peer: Peer) -> None:
    request = LegacyRequest("POST", f"{peer.url}/t")
    request.set_bytes_body(b"abc")
    response = _transport().send(request)
    assert response.status_code == 201
    assert response.body() == b'{"ok": true}'
    assert peer.bodies == [b"abc"]


def test_text_bodies_are_sent_as_utf8() -> None:
    server = Peer()
    try:
        request = LegacyRequest("POST", f"{server.url}/t")
        request.data = '{"title": "Kosten über Budget"}'
        _transport().send(request)
        assert server.bodies == ['{"title": "Kosten über Budget"}'.encode()]
    finally:
        server.stop()


def test_a_reset_after_the_request_went_out_is_a_response_error_named_aborted(peer: Peer) -> None:
    # "aborted" is what the storage adapter's one repeat of a conditional write looks for
    peer.mode = "reset"
    with pytest.raises(ServiceResponseError, match="aborted") as caught:
        _transport().send(HttpRequest("POST", f"{peer.url}/t", content=b"{}"))
    assert not isinstance(caught.value, ServiceResponseTimeoutError)


def test_no_answer_within_the_read_timeout_is_a_response_timeout(peer: Peer) -> None:
    peer.mode = "silent"
    started = time.monotonic()
    with pytest.raises(ServiceResponseTimeoutError, match="within 0.3s"):
        _transport(read_timeout=0.3).send(HttpRequest("GET", f"{peer.url}/t"))
    assert time.monotonic() - started < 1.5  # the read timeout, not the 2 s connect timeout


def test_a_refused_connection_is_a_request_error_the_sdk_may_retry() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ServiceRequestError, match=f"127.0.0.1:{port}"):
        _transport().send(HttpRequest("GET", f"http://127.0.0.1:{port}/t"))


def test_after_an_error_the_next_request_opens_a_new_connection(peer: Peer) -> None:
    transport = _transport()
    peer.mode = "reset"
    with pytest.raises(ServiceResponseError):
        transport.send(HttpRequest("GET", f"{peer.url}/t"))
    peer.mode = "keep"
    assert transport.send(HttpRequest("GET", f"{peer.url}/t")).status_code == 201
    assert peer.connections == 2


def test_a_rest_answer_asked_for_as_a_stream_is_read_whole_and_iterates_from_memory(peer: Peer) -> None:
    # the table transaction asks for its multipart answer as a stream
    fallback = Fallback()
    response = _transport(fallback).send(HttpRequest("POST", f"{peer.url}/$batch", content=b"{}"), stream=True)
    assert b"".join(response.iter_bytes()) == b'{"ok": true}'
    assert response.read() == b'{"ok": true}'
    assert fallback.sent == []


def test_legacy_streams_and_file_uploads_go_to_the_fallback(peer: Peer) -> None:
    fallback = Fallback()
    transport = _transport(fallback)
    assert transport.send(LegacyRequest("GET", f"{peer.url}/blob"), stream=True) == "fallback"
    upload = LegacyRequest("POST", f"{peer.url}/t")
    upload.set_formdata_body({"file": "x"})
    upload.files = {"file": ("a.txt", b"x")}
    assert transport.send(upload) == "fallback"
    assert len(fallback.sent) == 2
    assert peer.bodies == []


def test_tls_is_verified_by_default() -> None:
    import ssl

    context = default_tls_context(None)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_with_a_proxy_in_the_environment_storage_keeps_the_requests_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.core.pipeline.transport import RequestsTransport

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    proxied = storage_transport(pooled_session(), connection_timeout=5, read_timeout=30)
    assert isinstance(proxied, RequestsTransport)
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("https_proxy", raising=False)
    assert isinstance(storage_transport(pooled_session(), connection_timeout=5, read_timeout=30), StdlibTransport)


def test_close_drops_every_threads_connection(peer: Peer) -> None:
    transport = _transport()
    transport.send(HttpRequest("GET", f"{peer.url}/t"))
    transport.close()
    transport.send(HttpRequest("GET", f"{peer.url}/t"))  # usable again: a fresh connection
    assert peer.connections == 2


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    """A throwaway certificate for `name` (and no other name) and its key, for a local TLS peer."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "peer.pem", tmp / "peer.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def tls_peer(tmp_path: Path) -> Iterator[tuple[Peer, Path]]:
    cert, key = _self_signed(tmp_path, "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = Peer(tls=context)
    yield server, cert
    server.stop()


def test_https_with_a_trusted_certificate_keeps_one_connection(tls_peer: tuple[Peer, Path]) -> None:
    server, cert = tls_peer
    transport = StdlibTransport(
        connection_timeout=2.0, read_timeout=5.0, fallback=Fallback(), tls_context=default_tls_context(str(cert))
    )
    for _ in range(3):
        assert transport.send(HttpRequest("PUT", f"{server.https_url()}/t", content=b"{}")).status_code == 201
    assert server.connections == 1


def test_https_to_a_certificate_nobody_trusts_is_refused_before_sending(tls_peer: tuple[Peer, Path]) -> None:
    server, _ = tls_peer
    with pytest.raises(ServiceRequestError, match="TLS with localhost"):
        _transport().send(HttpRequest("PUT", f"{server.https_url()}/t", content=b"{}"))
    assert server.bodies == []


def test_https_checks_the_host_name_against_the_certificate(tls_peer: tuple[Peer, Path]) -> None:
    server, cert = tls_peer
    transport = StdlibTransport(
        connection_timeout=2.0, read_timeout=5.0, fallback=Fallback(), tls_context=default_tls_context(str(cert))
    )
    ip = ipaddress.ip_address("127.0.0.1")  # the certificate names localhost only
    with pytest.raises(ServiceRequestError, match="TLS with 127.0.0.1"):
        transport.send(HttpRequest("GET", f"{server.https_url(str(ip))}/t"))
    assert server.bodies == []
