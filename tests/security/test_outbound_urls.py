"""SSRF through the callback and Teams allow-lists: URL-parser differentials, IP spellings, redirects,
and names that resolve to private addresses."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url
from werkzeug import Response

from shared.alerts.routing import host_allowed, parse_routes
from shared.approvals.callbacks import LogicAppCallback, callback_problem
from shared.errors import ForbiddenActionError, SettingsError, UpstreamError
from shared.settings import is_loopback_host
from shared.urls import host_problem, is_public_address, pinned_session

CALLBACK_HOSTS = ("*.logic.azure.com",)
TEAMS_HOSTS = ("*.logic.azure.com", "*.environment.api.powerplatform.com", "*.webhook.office.com")

# each one passes a naive `urlsplit().hostname` + fnmatch check, or reaches somewhere else than it says
ATTACKS = [
    "https://attacker.example\\.logic.azure.com/cb",  # the reported one: urllib3 connects to attacker.example
    "https://169.254.169.254\\.logic.azure.com/metadata",
    "https://attacker.example\\@x.logic.azure.com/cb",
    "https://attacker.example%2f.logic.azure.com/cb",
    "https://attacker.example%00.logic.azure.com/cb",
    "https://attacker.example%252f.logic.azure.com/cb",
    "https://x.logic.azure.com@attacker.example/cb",
    "https://x.logic.azure.com:pw@attacker.example/cb",
    "https://attacker.example#@x.logic.azure.com/cb",
    "https://attacker.example?@x.logic.azure.com/cb",
    "https://attacker.example;.logic.azure.com/cb",
    "https://attacker.example,.logic.azure.com/cb",
    "https://*.logic.azure.com/cb",
    "https://attacker.example .logic.azure.com/cb",
    "https://attacker.example\t.logic.azure.com/cb",
    "https://x.logic.azure.com\r\nHost: attacker.example/cb",
    "https://ｘ.logic.azure.com/cb",  # fullwidth x
    "https://x.logic.azure.com\u3002attacker.example/cb",  # ideographic full stop
    "https://x.logıc.azure.com/cb",  # dotless i
    "https://x.logic.azure.com./cb",  # trailing dot
    "https://x..logic.azure.com/cb",
    "https://.logic.azure.com/cb",
    "https://x.logic.azure.com.attacker.example/cb",
    "https://attacker.example/x.logic.azure.com",
    "https://127.0.0.1/cb",
    "https://2130706433/cb",  # 127.0.0.1 in decimal
    "https://0x7f000001/cb",  # in hex
    "https://0177.0.0.1/cb",  # in octal
    "https://127.1/cb",  # short form
    "https://0x7f.0.0.1/cb",
    "https://169.254.169.254/latest/meta-data",
    "https://10.0.0.5/cb",
    "https://[::1]/cb",
    "https://[::ffff:127.0.0.1]/cb",
    "https://[::ffff:7f00:1]/cb",
    "https://[fe80::1%25eth0]/cb",
    "https://[0:0:0:0:0:0:0:1]/cb",
    "http://x.logic.azure.com/cb",  # not https
    "https:///x.logic.azure.com/cb",
    "https:\\\\x.logic.azure.com/cb",
    "//x.logic.azure.com/cb",
    "ftp://x.logic.azure.com/cb",
    "https://x.logic.azure.com:99999/cb",
    "https://x.logic.azure.com:443:80/cb",
    "https://x.logic.azure.com/cb#frag",
    "javascript:alert(1)//x.logic.azure.com",
]


@pytest.mark.parametrize("url", ATTACKS)
def test_callback_url_attacks_are_refused(url):
    assert callback_problem(url, CALLBACK_HOSTS) is not None


def _sent_host(url: str) -> str:
    try:
        return (parse_url(url).host or "").strip("[]")
    except ValueError:
        return ""


@pytest.mark.parametrize("url", ATTACKS)
def test_teams_webhook_attacks_are_refused_in_configuration(url):
    if is_loopback_host(_sent_host(url)) and url.startswith("https://"):
        # documented: a loopback address is always allowed for Teams routes (the local fakes; it cannot leak)
        assert host_allowed(url, TEAMS_HOSTS)
        return
    assert not host_allowed(url, TEAMS_HOSTS)
    with pytest.raises(SettingsError) as err:
        parse_routes(
            {"routes": {"squad-x": {"teams_webhook_url": url}}}, default_webhook_url="", allowed_hosts=TEAMS_HOSTS
        )
    assert "squad-x" in err.value.detail and "sig=" not in err.value.detail


def test_the_reported_backslash_url_would_have_reached_the_attacker():
    # the differential itself, as the issue reported it: the standard parser and the sending parser disagree
    url = "https://attacker.example\\.logic.azure.com/cb"
    assert urlsplit(url).hostname == "attacker.example\\.logic.azure.com"
    assert parse_url(url).host == "attacker.example"
    assert callback_problem(url, CALLBACK_HOSTS) is not None


@pytest.mark.parametrize(
    "url",
    [
        "https://prod-12.westeurope.logic.azure.com/workflows/abc/runs/r1/callback?api-version=2016-06-01&sp=%2Fruns&sv=1.0&sig=test-signature",
        "https://prod-12.westeurope.logic.azure.com:443/workflows/abc?sig=test-signature",
        "https://XN--80AK6AA92E.logic.azure.com/cb",  # punycode is plain ASCII and case-insensitive
    ],
)
def test_real_logic_app_callback_urls_pass(url):
    assert callback_problem(url, CALLBACK_HOSTS) is None


def test_ip_literals_and_loopback_pass_only_when_listed_verbatim():
    assert callback_problem("http://127.0.0.1:8080/cb", ("127.0.0.1",)) is None
    assert callback_problem("https://[::1]/cb", ("[::1]",)) is None
    assert callback_problem("https://[::1]/cb", ("::1",)) is None
    assert callback_problem("http://127.0.0.1:8080/cb", ("127.*",)) is not None
    assert callback_problem("http://127.0.0.1:8080/cb", ("*",)) is not None
    assert callback_problem("https://10.0.0.5/cb", ("10.0.0.*",)) is not None
    assert callback_problem("http://localhost:8080/cb", ("*.logic.azure.com",)) is not None
    assert callback_problem("http://localhost:8080/cb", ("localhost",)) is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("127.attacker.example", False),
        ("127.0.0.1.attacker.example", False),
        ("127.1", False),
        ("2130706433", False),
        ("localhost.attacker.example", False),
        ("attacker-localhost", False),
        ("0.0.0.0", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback_host_is_ipaddress_and_localhost_only(host, loopback):
    assert is_loopback_host(host) is loopback


def test_plain_http_to_a_127_prefixed_name_is_refused_everywhere_it_was_allowed():
    from shared.settings import load_settings

    with pytest.raises(SettingsError, match="SERVICENOW_INSTANCE_URL"):
        load_settings({"SERVICENOW_INSTANCE_URL": "http://127.attacker.example"}, local_settings=None)
    assert callback_problem("http://127.attacker.example/cb", ("127.attacker.example",)) == "must use https"


# -- property: whatever passes is what is sent --

_PIECES = st.sampled_from(
    ["x", "logic", "azure", "com", ".", "..", "\\", "/", "@", ":", "%2f", "%", "#", "?", ";", ",", "*", "[", "]",
     " ", "\t", "ｘ", "127", "0x7f", "1", "-", "attacker", "example", "443", "::1", "\u3002", "=", "&"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(_PIECES, min_size=1, max_size=12), tail=st.sampled_from(["", "/cb", "/cb?sig=s"]))
def test_any_url_that_passes_connects_to_an_allowed_host_for_every_parser(pieces, tail):
    url = "https://" + "".join(pieces) + tail
    if callback_problem(url, CALLBACK_HOSTS + ("127.0.0.1",)) is not None:
        return
    sent = parse_url(requests.Request("POST", url).prepare().url)
    std = urlsplit(url)
    host = (sent.host or "").lower()
    assert host == (std.hostname or "").lower() == (parse_url(url).host or "").lower()
    assert host.endswith(".logic.azure.com") or host == "127.0.0.1"
    assert host_problem(host) is None and sent.auth is None


# -- redirects are never followed --


def test_a_callback_answered_with_a_redirect_is_not_followed(httpserver):
    elsewhere = f"http://127.0.0.1:{httpserver.port}/elsewhere"
    httpserver.expect_request("/cb", method="POST").respond_with_response(
        Response(status=307, headers={"Location": elsewhere})
    )
    callback = LogicAppCallback(("127.0.0.1",), timeout=5)
    with pytest.raises(UpstreamError, match="answered 307"):
        callback.post(f"http://127.0.0.1:{httpserver.port}/cb?sig=test-signature", {"x": 1}, what="approval a-1")
    assert [r.path for r, _ in httpserver.log] == ["/cb"]


def test_a_teams_webhook_answered_with_a_redirect_is_not_followed(httpserver):
    from shared.adapters.teams import TeamsWebhook

    httpserver.expect_request("/hook", method="POST").respond_with_response(
        Response(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data"})
    )
    with pytest.raises(UpstreamError):
        TeamsWebhook(TEAMS_HOSTS, timeout=5).post(httpserver.url_for("/hook"), {"text": "x"})
    assert [r.path for r, _ in httpserver.log] == ["/hook"]


# -- resolve and pin: a public-looking name that resolves to a private address --


@pytest.fixture
def name_resolving_to_loopback(monkeypatch):
    """DNS as an attacker controls it: `cb.logic.azure.com` resolves to 127.0.0.1 (a rebinding answer)."""
    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if str(host).endswith(".logic.azure.com") or str(host).endswith(".webhook.office.com"):
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_a_callback_host_resolving_to_a_private_address_is_refused_before_sending(
    httpserver, name_resolving_to_loopback
):
    httpserver.expect_request("/cb").respond_with_data("ok")
    session = pinned_session(CALLBACK_HOSTS)
    url = f"http://cb.logic.azure.com:{httpserver.port}/cb"
    with pytest.raises(ForbiddenActionError, match="non-public address"):
        session.post(url, json={}, timeout=5, allow_redirects=False)
    assert httpserver.log == []


def test_the_callback_client_turns_a_private_resolution_into_a_permanent_refusal(
    httpserver, name_resolving_to_loopback
):
    httpserver.expect_request("/cb").respond_with_data("ok")
    callback = LogicAppCallback(CALLBACK_HOSTS, timeout=5)
    # https to the fake peer would fail TLS anyway: the refusal must come first, from the address check
    with pytest.raises(UpstreamError, match="non-public address") as err:
        callback.post(f"https://cb.logic.azure.com:{httpserver.port}/cb?sig=test-signature", {}, what="approval a-1")
    assert "test-signature" not in err.value.detail
    assert httpserver.log == []


def test_teams_posts_refuse_a_webhook_host_resolving_to_a_private_address(httpserver, name_resolving_to_loopback):
    from shared.adapters.teams import TeamsWebhook

    with pytest.raises(ForbiddenActionError, match="non-public address"):
        TeamsWebhook(TEAMS_HOSTS, timeout=5).post(f"https://x.webhook.office.com:{httpserver.port}/hook", {})
    assert httpserver.log == []


def test_a_host_listed_verbatim_may_resolve_to_a_private_address(httpserver):
    httpserver.expect_request("/cb").respond_with_data("ok")
    session = pinned_session(("127.0.0.1",))
    assert session.post(f"http://127.0.0.1:{httpserver.port}/cb", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("20.50.2.1", True),
        ("2603:1020::1", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("not-an-ip", False),
    ],
)
def test_only_global_unicast_addresses_are_public(address, public):
    assert is_public_address(address) is public
