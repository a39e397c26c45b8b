"""The alert benchmark's fake Teams and ServiceNow: the fault plan both implementations are measured
against, served with HTTP/1.1 keep-alive (own process) or a connection per request (in-process)."""

from __future__ import annotations

import http.client
import json

import pytest

from bench.bench_alerts import FakePeers, _serve


@pytest.fixture(params=[True, False], ids=["keep-alive", "per-request"])
def served(request):
    peers = FakePeers(timeout_s=0.2)
    server = _serve(peers, keep_alive=request.param)
    yield peers, server.server_address[1], request.param
    server.shutdown()
    server.server_close()


def _card(number: int) -> bytes:
    return json.dumps({"attachments": [{"content": {"body": [{"text": f"bench-alert {number}"}]}}]}).encode()


def test_teams_fails_planned_first_attempts_and_counts_each_card(served):
    peers, port, keep_alive = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    answers = []
    # GIVEN cards 0 (503 first), 2 (429 first) and 5 (no fault), each posted twice on one connection
    for number in (0, 0, 2, 2, 5, 5):
        conn.request("POST", f"/hook/{number}", body=_card(number), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        answers.append((response.status, response.getheader("Retry-After"), response.will_close))
    # THEN only the planned first attempts fail, 429 carries Retry-After, and every delivered post counts
    assert [a[:2] for a in answers] == [
        (503, None),
        (202, None),
        (429, "1"),
        (202, None),
        (202, None),
        (202, None),
    ]
    assert peers.state()["cards"] == {"0": 1, "2": 1, "5": 2}
    # AND the connection stays open between requests only with keep-alive
    assert {a[2] for a in answers} == {not keep_alive}


def test_a_servicenow_create_whose_answer_is_lost_still_creates_the_incident(served):
    peers, port, _ = served
    # GIVEN alert 20 (the plan loses the answer of its first create: the client times out)
    body = json.dumps({"correlation_id": "bench-x:20", "short_description": "x"}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.1)
    conn.request("POST", "/api/now/table/incident", body=body, headers={"Content-Type": "application/json"})
    with pytest.raises(TimeoutError):
        conn.getresponse()
    conn.close()
    # WHEN the client looks it up by correlation id
    look = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    look.request("GET", "/api/now/table/incident?sysparm_query=correlation_id%3Dbench-x%3A20%5Eactive%3Dtrue")
    found = json.loads(look.getresponse().read())["result"]
    # THEN it is there, once
    assert [r["correlation_id"] for r in found] == ["bench-x:20"]
    assert len(peers.state()["incidents"]) == 1
