"""TeamsWebhook and ServiceNowClient against local fakes that behave like the real services."""

from __future__ import annotations

import logging
import time

import pytest

from shared.adapters.servicenow import ServiceNowClient
from shared.adapters.teams import TeamsWebhook
from shared.errors import ForbiddenActionError, TransientUpstreamError, UpstreamAuthError, UpstreamError
from tests.fixtures.alerts.fakes import FakeServiceNow, FakeTeams, start_server

CARD = {"type": "message", "attachments": []}


@pytest.fixture(scope="module")
def server():
    srv = start_server()  # one server for the module: stopping one takes half a second
    yield srv
    srv.stop()


@pytest.fixture
def teams(server):
    server.clear()
    return FakeTeams(server).install()


@pytest.fixture
def servicenow(server):
    server.clear()
    return FakeServiceNow(server).install()


def _client(**kw) -> TeamsWebhook:
    return TeamsWebhook(("*.logic.azure.com",), timeout=kw.pop("timeout", 2.0), **kw)


def test_workflows_202_with_an_empty_body_is_success(teams):
    assert _client().post(teams.url(), CARD) == 202
    assert teams.cards() == [CARD]


def test_429_with_retry_after_is_transient_and_holds_the_url_back(teams):
    teams.plan["/workflows/hook"] = ["throttle"]
    client = _client()
    with pytest.raises(TransientUpstreamError) as err:
        client.post(teams.url(), CARD)
    assert err.value.retry_after == 7
    with pytest.raises(TransientUpstreamError):  # not called again before Retry-After has passed
        client.post(teams.url(), CARD)
    assert teams.cards() == []


def test_a_200_whose_body_reports_429_is_throttling_not_success(teams):
    teams.plan["/workflows/hook"] = ["throttle_in_body"]
    with pytest.raises(TransientUpstreamError, match="429"):
        _client().post(teams.url(), CARD)


def test_503_and_timeouts_are_transient_and_never_show_the_url(teams):
    teams.plan["/workflows/hook"] = ["unavailable", "slow:1.5"]
    client = _client(timeout=0.5)
    for _ in range(2):
        with pytest.raises(TransientUpstreamError) as err:
            client.post(teams.url() + "?sig=test-signature", CARD)
        assert "test-signature" not in err.value.detail and "webhook#" in err.value.detail


def test_400_is_permanent_and_401_is_an_auth_error(teams):
    teams.plan["/workflows/hook"] = ["bad_request", "unauthorized"]
    with pytest.raises(UpstreamError) as err:
        _client().post(teams.url(), CARD)
    assert not isinstance(err.value, TransientUpstreamError)
    with pytest.raises(UpstreamAuthError):
        _client().post(teams.url(), CARD)


def test_a_host_outside_the_allow_list_is_refused_and_not_called(teams):
    client = _client()
    with pytest.raises(ForbiddenActionError, match="not in TEAMS_WEBHOOK_ALLOWED_HOSTS"):
        client.post("https://hooks.example.net/test-hook", CARD)


def test_the_allow_list_check_is_remembered_for_passes_only_and_bounded(teams, monkeypatch):
    import shared.adapters.teams as teams_module

    client = _client()
    monkeypatch.setattr(teams_module, "MAX_CHECKED_URLS", 2)
    for _ in range(3):  # a refusal is never remembered: refused every time
        with pytest.raises(ForbiddenActionError):
            client.check_allowed("https://hooks.example.net/test-hook")
    calls = []
    real = teams_module.host_allowed
    monkeypatch.setattr(teams_module, "host_allowed", lambda url, hosts: calls.append(url) or real(url, hosts))
    urls = [f"https://prod-{i}.westeurope.logic.azure.com/workflows/hook" for i in range(3)]
    for url in urls[:2] * 3:
        client.check_allowed(url)
    assert calls == urls[:2]  # each checked once, then remembered
    client.check_allowed(urls[2])  # a third forgets the two before it: at most MAX_CHECKED_URLS kept
    client.check_allowed(urls[0])
    assert calls == [*urls[:2], urls[2], urls[0]]


def test_at_most_four_requests_per_second_per_webhook(teams):
    client = _client()
    started = time.monotonic()
    for _ in range(12):
        client.post(teams.url(), CARD)
    elapsed = time.monotonic() - started
    assert elapsed >= 1.9  # 4 in the first burst, then 4/s: 8 more need >= 2 s
    stamps = [t for _, t, _ in teams.received]
    for i in range(4, len(stamps)):
        assert stamps[i] - stamps[i - 4] >= 0.95, "more than 4 requests within one second"


def _sn(fake: FakeServiceNow, **kw) -> ServiceNowClient:
    auth = kw.pop("auth", "basic")
    if auth == "oauth":
        return ServiceNowClient(fake.url, client_id=fake.client_id, client_secret=fake.client_secret, **kw)
    return ServiceNowClient(fake.url, username=fake.username, password=kw.pop("password", fake.password), **kw)


def _fields(cid: str) -> dict[str, str]:
    return {
        "short_description": "t",
        "impact": "1",
        "urgency": "1",
        "correlation_id": cid,
        "correlation_display": "ValueFlow",
    }


def test_find_active_sends_the_exact_query_and_ignores_resolved_incidents(servicenow):
    client = _sn(servicenow)
    assert client.find_active("k1") is None
    created = client.create(_fields("k1"))
    client.create(_fields("k2"))
    assert client.find_active("k1")["sys_id"] == created["sys_id"]
    method, path, params = servicenow.requests[0]
    assert (method, path) == ("GET", "/api/now/table/incident")
    assert params["sysparm_query"] == "correlation_id=k1^active=true" and params["sysparm_limit"] == "1"
    client.update(created["sys_id"], {"state": "6", "close_code": "Resolved by caller", "close_notes": "ok"})
    assert client.find_active("k1") is None


def test_oauth_client_credentials_token_is_fetched_once_and_reused(servicenow):
    client = _sn(servicenow, auth="oauth")
    client.create(_fields("k1"))
    client.find_active("k1")
    client.find_active("k2")
    assert servicenow.tokens_issued == 1


def test_401_is_an_auth_error_reported_loudly_once(servicenow, caplog):
    ServiceNowClient._auth_reported = False
    client = _sn(servicenow, password="wrong-test-password")
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            with pytest.raises(UpstreamAuthError):
                client.find_active("k1")
    assert sum("CONFIGURATION ERROR" in r.getMessage() for r in caplog.records) == 1
    assert "wrong-test-password" not in caplog.text


def test_429_carries_retry_after_and_500_is_transient(servicenow):
    servicenow.plan = ["throttle", "error"]
    client = _sn(servicenow)
    with pytest.raises(TransientUpstreamError) as err:
        client.find_active("k1")
    assert err.value.retry_after == 3
    with pytest.raises(TransientUpstreamError):
        client.find_active("k1")


def test_a_create_that_times_out_is_found_by_re_query_not_posted_again(servicenow):
    servicenow.plan = ["ok", "slow:1.2"]  # the GET passes, the POST is slow but succeeds on the server
    client = _sn(servicenow, timeout=0.5)
    assert client.find_active("k1") is None
    time_out = None
    try:
        found = client.create(_fields("k1"))
    except TransientUpstreamError as err:  # the re-query ran before the slow create finished on the server
        time_out = err
        time.sleep(1.0)
        found = client.find_active("k1")
    assert found is not None and found["correlation_id"] == "k1"
    posts = [r for r in servicenow.requests if r[0] == "POST"]
    assert len(posts) == 1 and len(servicenow.incidents) == 1
    if time_out is not None:
        assert "re-query" in time_out.detail
