"""The review page in a real browser: a cost card's Review link, the chart, one click on "planned", and the
series muted on the next scan. Headless Chromium from the system packages (`make test` installs it); the
test fails, never skips, when the browser cannot start."""

import json
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from devhost.browser import BrowserError, Chromium
from devhost.demo_costs import demo_costs, export_runs
from shared.alerts.delivery import AlertDelivery
from shared.alerts.outbox import Outbox
from shared.costs.feedback import list_episodes
from shared.costs.loader import ingest_paths
from shared.costs.scan import run_daily_scan
from shared.idempotency import TABLE as IDEMPOTENCY
from shared.runtime import Runtime
from shared.settings import load_settings
from tests.conftest import start_host, stop_host

pytestmark = pytest.mark.e2e
END = date(2026, 10, 20)
SCREENSHOT = Path(__file__).resolve().parents[2] / ".valueflow" / "review-page.png"


def _load(runtime, root: Path, end: date) -> list[str]:
    frame, injected = demo_costs(n_resources=24, days=60, end=end, seed=11)
    for run in export_runs(frame):
        for name, data in run.blobs:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    ingest_paths(runtime, [str(root)])
    return injected


def _alerts(runtime):
    out = []
    while batch := runtime.storage.receive("alerts", max_messages=32, visibility_timeout=1):
        for message in batch:
            out.append(message.text())
            runtime.storage.ack("alerts", message)
    return out


@pytest.fixture
def review_host(env, tmp_path):
    host = start_host(env, tmp_path / "host.log", extra=["--no-schedules"])
    settings = load_settings({**env, "VALUEFLOW_PORT": str(host.port)}, local_settings=tmp_path / "absent.json")
    runtime = Runtime(settings)
    for scope in ("cost-scan", "cost-alerts", "cost-partition", "cost-aggregates", "cost-export", "alerts"):
        for row in list(runtime.storage.query(IDEMPOTENCY, "PartitionKey eq @pk", pk=scope)):
            runtime.storage.delete(IDEMPOTENCY, scope, row["RowKey"])
    for row in list(runtime.storage.query("episodes")):
        runtime.storage.delete("episodes", row["PartitionKey"], row["RowKey"])
    _alerts(runtime)
    yield host, runtime
    stop_host(host)


def _review_links(runtime) -> dict[str, str]:
    """Deliver the queued alerts (Teams not configured: the outbox) and read each card's Review button."""
    delivery = AlertDelivery.from_settings(runtime.settings, runtime.storage)
    for body in _alerts(runtime):
        delivery.handle(body)
    links = {}
    for entry in Outbox(runtime.settings.outbox_dir).entries():
        if entry.channel != "teams":
            continue
        card = entry.payload()["attachments"][0]["content"]
        for action in card.get("actions", []):
            if action["title"] == "Review":
                links[urlsplit(action["url"]).path.rsplit("/", 1)[-1]] = action["url"]
    return links


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_a_card_review_link_shows_the_chart_and_planned_mutes_the_series_on_the_next_scan(review_host, tmp_path):
    host, runtime = review_host
    # GIVEN a scanned day with injected spikes, and their cards delivered to the outbox
    injected = _load(runtime, tmp_path / "export", END)
    assert run_daily_scan(runtime, END).alerts_sent >= 1
    links = _review_links(runtime)
    critical = min(
        (e for e in list_episodes(runtime, "open") if e["series_kind"] == "resource" and e["series_id"] in injected),
        key=lambda e: (e["severity"] != "critical", -e["excess_usd_per_day"]),
    )
    url = links[critical["episode_id"]]
    assert url.startswith(host.base_url + "/api/review/anomalies/")
    # WHEN a squad member opens the card's link in a browser
    try:
        browser = Chromium()
        browser.__enter__()
    except BrowserError as err:
        pytest.fail(f"headless Chromium is needed for this test: {err}", pytrace=False)
    try:
        browser.goto(url)
        # THEN the page shows the chart with the flagged day, the explanation and the owner
        assert browser.evaluate("document.querySelectorAll('svg.chart polyline.cost').length") == 1
        assert browser.evaluate("document.querySelectorAll('svg.chart circle.flagged').length") >= 1
        assert browser.evaluate("document.querySelector('svg.chart').getBoundingClientRect().width") > 300
        explanation = browser.evaluate("document.querySelector('#explanation').innerText")
        assert "Why flagged" in explanation and "/day" in explanation
        assert critical["owner"] in browser.evaluate("document.body.innerText")
        browser.screenshot(SCREENSHOT)
        # WHEN they say why and click "Planned"
        browser.fill("textarea[name=why]", "load test for the launch")
        browser.fill("input[name=by]", "ana")
        browser.click("#verdict-planned", navigates=True)
        # THEN the page thanks them, shows the series muted and the feedback in the history
        assert "is recorded" in browser.evaluate("document.querySelector('#notice').innerText")
        assert browser.evaluate("!!document.querySelector('#muted')")
        history = browser.evaluate("document.querySelector('#history').innerText")
        assert "ana" in history and "load test for the launch" in history and "Planned" in history
    finally:
        browser.close()
    # AND on the next scan the spike goes on, the episode stays open and muted, and no alert is raised for it
    _load(runtime, tmp_path / "export-next", END + timedelta(days=1))
    run_daily_scan(runtime, END + timedelta(days=1))
    again = [json.loads(body)["alert"] for body in _alerts(runtime)]
    assert not [a for a in again if a["dedupe_key"] == f"cost-anomaly:{critical['episode_id']}"], again
    status, _, body = host.request("GET", f"/api/anomalies/{critical['episode_id']}")
    assert status == 200 and body["suppressed"] is True and body["verdict"] == "planned", body
    assert [(f["verdict"], f["by"], f["source"]) for f in body["feedback"]] == [("planned", "ana", "review-page")]


def test_review_links_are_refused_without_a_valid_token_and_history_is_never_overwritten(review_host, tmp_path):
    host, runtime = review_host
    # another window than the first test's: its episodes (and their alerts' idempotency records in the
    # session's Azurite) are not the same ones
    _load(runtime, tmp_path / "export", END - timedelta(days=21))
    run_daily_scan(runtime, END - timedelta(days=21))
    links = _review_links(runtime)
    episode_id, url = next(iter(links.items()))
    other_id = next(i for i in links if i != episode_id)
    token = parse_qs(urlsplit(url).query)["t"][0]
    base = f"{host.base_url}/api/review/anomalies"
    # no token, a bad token, another episode's token
    assert _get(f"{base}/{episode_id}")[0] == 401
    assert _get(f"{base}/{episode_id}?t=abc.def")[0] == 401
    status, html = _get(f"{base}/{other_id}?t={token}")
    assert status == 403 and "another anomaly" in html
    # two verdicts through the form: both stay in the history; the signed-in user is not trusted without
    # App Service Authentication (WEBSITE_AUTH_ENABLED is off here)
    for verdict, why in (("confirmed", "real leak"), ("not_anomaly", "reclassified: migration")):
        req = urllib.request.Request(
            f"{base}/{episode_id}/feedback?t={token}",
            data=f"verdict={verdict}&why={why}&by=bo".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "X-MS-CLIENT-PRINCIPAL-NAME": "forged"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:  # follows the 303 back to the page
            assert resp.status == 200 and "is recorded" in resp.read().decode()
    status, _, body = host.request("GET", f"/api/anomalies/{episode_id}")
    assert status == 200 and body["verdict"] == "not_anomaly"
    assert [(f["verdict"], f["why"], f["by"], f["authenticated"]) for f in body["feedback"]] == [
        ("confirmed", "real leak", "bo", False),
        ("not_anomaly", "reclassified: migration", "bo", False),
    ]
    assert "explanation" in body and body["explanation"]["excessPerDay"] > 0
    # a bad verdict is a 400 page; the API needs the function key
    req = urllib.request.Request(
        f"{base}/{episode_id}/feedback?t={token}",
        data=b"verdict=bogus",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(req, timeout=30)
    assert bad.value.code == 400
    assert host.request("GET", f"/api/anomalies/{episode_id}", key=False)[0] == 401
    # the squad page (linked from the episode page) lists the squad's episodes with their own links
    status, html = _get(url)
    squad_link = html.split('href="')[-1].split('"')[0].replace("&amp;", "&")
    status, squad_html = _get(host.base_url + squad_link if squad_link.startswith("/") else squad_link)
    assert status == 200 and "Cost anomalies of squad" in squad_html and "/api/review/anomalies/" in squad_html
