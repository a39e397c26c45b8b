"""Attacks on the local host's HTTP handling, over raw sockets: desync, slow bodies, floods, nested
JSON, bad Event Grid payloads, header reflection and keys on every route."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.conftest import KEY, connect, invocations, read_all

pytestmark = pytest.mark.e2e

EG = "/runtime/webhooks/eventgrid?functionName=on_event"


def _raw(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _call(host, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
    with connect(host) as sock:
        sock.sendall(_raw(method, path, body, {"Connection": "close", **(headers or {})}))
        responses, _ = read_all(sock)
    assert len(responses) == 1, responses
    return responses[0]


# -- request desync: a rejected request's body is never read as the next request --

SMUGGLED = _raw("POST", f"/api/items/7?code={KEY}", b"{}")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/api/items/1", 401),  # key check answers before the function
        ("POST", "/api/nowhere", 404),
        ("DELETE", "/api/items/1", 405),
        ("POST", "/nothing-here", 404),
        ("POST", "/runtime/webhooks/eventgrid?functionName=on_event", 401),
        ("POST", "/admin/functions/tick", 401),
        ("POST", "/runtime/webhooks/eventgrid?functionName=nope", 404),
    ],
)
def test_a_rejected_requests_body_is_never_parsed_as_the_next_request(small_host, method, path, status):
    # GIVEN a kept-alive connection and a rejected request whose body is itself a valid, keyed request
    with connect(small_host, timeout=5) as sock:
        sock.sendall(_raw(method, path, SMUGGLED))
        responses, _ = read_all(sock)
    # THEN exactly one answer (the rejection) and the smuggled request never ran
    assert [r[0] for r in responses] == [status]
    assert invocations(small_host) == []


def test_the_connection_stays_usable_after_a_rejection_because_the_body_was_read(small_host):
    with connect(small_host, timeout=5) as sock:
        sock.sendall(_raw("POST", "/api/items/1", b'{"x": 1}'))  # no key: 401, body drained
        sock.sendall(_raw("GET", f"/api/items/2?code={KEY}", headers={"Connection": "close"}))
        responses, closed = read_all(sock)
    assert [r[0] for r in responses] == [401, 200] and closed
    assert json.loads(responses[1][2]) == {"item_id": 2, "method": "GET"}


@pytest.mark.parametrize(
    "headers",
    [
        {"Transfer-Encoding": "chunked", "Content-Length": "5"},  # TE.CL smuggling
        {"Content-Length": "-5"},
        {"Content-Length": "0x10"},
    ],
)
def test_ambiguous_body_framing_is_refused_and_the_connection_closed(small_host, headers):
    head = "POST /api/items/1?code=" + KEY + " HTTP/1.1\r\nHost: x\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with connect(small_host, timeout=5) as sock:
        sock.sendall(head.encode() + b"0\r\n\r\n" + SMUGGLED)
        responses, closed = read_all(sock)
    assert [r[0] for r in responses] == [400] and closed
    assert invocations(small_host) == []


def test_two_different_content_lengths_are_refused(small_host):
    raw = f"POST /api/items/1?code={KEY} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{{}}"
    with connect(small_host, timeout=5) as sock:
        sock.sendall(raw.encode() + SMUGGLED)
        responses, closed = read_all(sock)
    assert [r[0] for r in responses] == [400] and closed


# -- slow bodies and floods: bounded threads, every connection freed --


def test_half_sent_bodies_do_not_pin_threads_and_a_normal_request_still_gets_through(small_host):
    baseline = threading.active_count()
    # GIVEN more stalled requests (headers sent, 5 of 100 body bytes) than the host has threads
    stalled = [connect(small_host, timeout=15) for _ in range(12)]
    for sock in stalled:
        head = f"POST /api/items/1?code={KEY} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head.encode() + b"12345")
    peak = baseline
    for _ in range(10):
        peak = max(peak, threading.active_count())
        time.sleep(0.05)
    # WHEN a normal client calls (honouring 503 Retry-After)
    status = 0
    for _ in range(40):
        status = _call(small_host, "GET", f"/api/items/3?code={KEY}")[0]
        if status != 503:
            break
        time.sleep(0.5)
    # THEN it is answered, the handler threads never exceeded the bound, and every stalled
    # connection was answered (408, or 503 when no thread was free) and closed, not held forever
    assert status == 200
    assert peak - baseline <= small_host.max_threads
    for sock in stalled:
        responses, closed = read_all(sock)
        sock.close()
        assert closed and [r[0] for r in responses] in ([408], [503], [])


def test_a_burst_of_concurrent_posts_gets_answers_not_connection_resets(small_host):
    def post(i: int) -> int:
        req = urllib.request.Request(
            f"http://127.0.0.1:{small_host.port}/api/items/{i}?code={KEY}", data=b"{}", method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    with ThreadPoolExecutor(max_workers=60) as pool:
        statuses = list(pool.map(post, range(60)))
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 1
    assert len(statuses) == 60  # none raised (a reset would have)


# -- bad payloads get 4xx (Event Grid does not retry 400), never 500 --


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_deeply_nested_json_is_a_400(small_host, depth):
    body = b"[" * depth + b"]" * depth
    status, _, payload = _call(small_host, "POST", f"{EG}&code={KEY}", body, {"Content-Type": "application/json"})
    assert status == 400 and ("nested too deeply" in payload.decode() or "array of event" in payload.decode())
    nested_data = (
        b'{"id":"1","source":"s","type":"t","specversion":"1.0","data":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    )
    status, _, payload = _call(small_host, "POST", f"{EG}&code={KEY}", nested_data)
    assert status == 400, payload


@pytest.mark.parametrize("data", ["a-string", ["list"], 42, None, {"validationCode": ["x"]}, {"validationCode": ""}])
def test_subscription_validation_without_an_object_data_is_a_400(small_host, data):
    event = {
        "id": "v1",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "subject": "",
        "eventTime": "2026-11-20T14:03:12Z",
        "data": data,
    }
    status, _, payload = _call(
        small_host,
        "POST",
        f"{EG}&code={KEY}",
        json.dumps([event]).encode(),
        {"aeg-event-type": "SubscriptionValidation"},
    )
    assert status == 400 and b"validationCode" in payload


@pytest.mark.parametrize("data", ["a-string", [1, 2], 7, True])
def test_a_cloudevent_with_non_object_data_is_a_400_and_never_reaches_the_function(small_host, data):
    event = {"id": "c1", "source": "/s", "type": "Microsoft.PolicyInsights.PolicyStateCreated", "specversion": "1.0"}
    status, _, payload = _call(small_host, "POST", f"{EG}&code={KEY}", json.dumps({**event, "data": data}).encode())
    assert status == 400 and b"data must be a JSON object" in payload
    assert invocations(small_host) == []


def test_subscription_validation_never_fetches_the_validation_url(small_host, httpserver):
    event = {
        "id": "v1",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "subject": "",
        "eventTime": "2026-11-20T14:03:12Z",
        "data": {"validationCode": "code-1", "validationUrl": httpserver.url_for("/validate")},
    }
    status, _, payload = _call(small_host, "POST", f"{EG}&code={KEY}", json.dumps([event]).encode())
    assert status == 200 and json.loads(payload) == {"validationResponse": "code-1"}
    assert httpserver.log == []


# -- the anonymous CloudEvents OPTIONS handshake reflects only a host name --


def test_the_options_handshake_reflects_a_plain_origin(small_host):
    status, headers, _ = _call(small_host, "OPTIONS", EG, headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert status == 200 and headers["webhook-allowed-origin"] == "eventgrid.azure.net"


@pytest.mark.parametrize(
    "origin_lines",
    [
        "WebHook-Request-Origin: eventgrid.azure.net\r\n X-Injected: yes",  # folded continuation line
        "WebHook-Request-Origin: eventgrid.azure.net\r\n\tSet-Cookie: a=b",
        "WebHook-Request-Origin: a.example, b.example",
        "WebHook-Request-Origin: evil.example:8080",
        "WebHook-Request-Origin: *",
        "WebHook-Request-Origin: 2130706433",
        "WebHook-Request-Origin: a.example\r\nWebHook-Request-Origin: b.example",
        "WebHook-Request-Origin: ev%0d%0ail.example",
    ],
)
def test_the_options_handshake_refuses_an_origin_that_is_not_one_host_name(small_host, origin_lines):
    raw = f"OPTIONS {EG} HTTP/1.1\r\nHost: x\r\n{origin_lines}\r\nConnection: close\r\n\r\n"
    with connect(small_host, timeout=5) as sock:
        sock.sendall(raw.encode())
        responses, _ = read_all(sock)
    assert [r[0] for r in responses] == [400]
    assert "webhook-allowed-origin" not in responses[0][1] and "x-injected" not in responses[0][1]


# -- keys on every route --


def test_every_route_that_needs_a_key_refuses_a_missing_or_wrong_one(small_host):
    paths = [
        (m, f"/api/{i.route.template.replace('{item_id:int}', '1')}")
        for i in small_host.functions.values()
        if i.is_http and i.auth_level != "anonymous" and i.route is not None
        for m in i.methods
    ]
    paths += [
        ("POST", EG),
        ("POST", "/admin/functions/tick"),
        ("GET", "/admin/functions"),
        ("GET", "/admin/host/status"),
    ]
    assert len(paths) >= 6
    for method, path in paths:
        sep = "&" if "?" in path else "?"
        for suffix, headers in [
            ("", {}),
            (f"{sep}code=wrong", {}),
            ("", {"x-functions-key": "wrong"}),
            (f"{sep}code={KEY[:-1]}", {}),
            (f"{sep}code={KEY}x", {}),
        ]:
            status, _, _ = _call(small_host, method, path + suffix, b"{}" if method == "POST" else b"", headers)
            assert status == 401, (method, path + suffix, headers)
    assert invocations(small_host) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(guess=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40))
def test_no_guessed_key_opens_a_function(small_host, guess):
    if guess == KEY:
        return
    status, _, _ = _call(small_host, "GET", "/api/items/1", headers={"x-functions-key": guess})
    assert status == 401
