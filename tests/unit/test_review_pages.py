"""Review links, chart and page rendering (pure)."""

from datetime import UTC, date, datetime, timedelta

import pytest

from shared.alerts.cards import adaptive_card_message, alert_content
from shared.alerts.model import Alert
from shared.errors import ForbiddenActionError, UnauthorizedError
from shared.review import chart, page, tokens

SECRET = b"unit-test-review-secret"
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def test_a_minted_link_opens_its_episode_until_it_expires():
    token = tokens.mint(SECRET, tokens.episode_scope("ce-1"), 14, NOW)
    expires = tokens.verify(SECRET, token, tokens.episode_scope("ce-1"), NOW + timedelta(days=13, hours=23))
    assert expires == NOW + timedelta(days=14)
    with pytest.raises(UnauthorizedError, match="expired on 2026-12-04"):
        tokens.verify(SECRET, token, tokens.episode_scope("ce-1"), NOW + timedelta(days=14))


def test_a_link_for_one_episode_does_not_open_another():
    token = tokens.mint(SECRET, tokens.episode_scope("ce-1"), 14, NOW)
    with pytest.raises(ForbiddenActionError, match="another anomaly"):
        tokens.verify(SECRET, token, tokens.episode_scope("ce-2"), NOW)


@pytest.mark.parametrize("mangle", ["", "x", "a.b.c", "%%%.###"])
def test_a_malformed_or_missing_token_is_refused(mangle):
    with pytest.raises(UnauthorizedError):
        tokens.verify(SECRET, mangle, tokens.episode_scope("ce-1"), NOW)


def test_a_token_changed_to_last_longer_or_signed_with_another_secret_is_refused():
    token = tokens.mint(SECRET, tokens.episode_scope("ce-1"), 14, NOW)
    longer = tokens.sign(b"another-secret", tokens.episode_scope("ce-1"), NOW + timedelta(days=400))
    body, mac = token.split(".")
    forged = longer.split(".")[0] + "." + mac
    for bad in (longer, forged):
        with pytest.raises(UnauthorizedError, match="signature"):
            tokens.verify(SECRET, bad, tokens.episode_scope("ce-1"), NOW)


def _chart(costs, upper=120.0):
    days = [date(2026, 10, 1) + timedelta(days=i) for i in range(len(costs))]
    return chart.ChartInput(days, costs, 100.0, 80.0, upper, frozenset(days[-1:]), band_from=days[-1] if days else None)


def test_the_chart_switches_to_a_log_scale_when_the_spike_dwarfs_the_band():
    calm = chart.render_svg(_chart([100.0] * 20 + [300.0]))
    spike = chart.render_svg(_chart([100.0] * 20 + [40_000.0]))
    assert 'data-scale="linear"' in calm and 'data-scale="log"' in spike
    assert spike.count('class="flagged"') == 1 and 'class="band"' in spike and 'class="cost"' in spike
    assert "<svg" in chart.render_svg(_chart([])) and "No daily cost" in chart.render_svg(_chart([]))


def _episode(**over):
    doc = {
        "episode_id": "ce-1",
        "series_id": "/subscriptions/s/resourcegroups/rg/providers/x/vm-<b>1</b>",
        "series_kind": "resource",
        "status": "open",
        "severity": "critical",
        "owner": "payments",
        "start_date": "2026-11-19",
        "last_flagged_date": "2026-11-19",
        "end_date": None,
        "cost": 36100.0,
        "expected": 100.0,
        "total_excess_usd": 36000.0,
        "verdict": "",
        "suppressed": False,
    }
    return {**doc, **over}


def _page(explanation, **over):
    return page.render_episode(
        page.EpisodePage(
            episode=_episode(**over),
            explanation=explanation,
            history=[],
            chart_svg="<svg></svg>",
            feedback_action="/api/review/anomalies/ce-1/feedback?t=abc",
        )
    )


def test_the_page_renders_the_explanation_keys_it_has_and_escapes_what_it_shows():
    html = _page(
        {
            "reason": "above the seasonal band <script>",
            "expected": 100,
            "actual": 36100,
            "lower": 80,
            "upper": 120,
            "excessPerDay": 36000,
            "excessPerHour": 1500,
            "currency": "EUR",
            "contributors": [{"name": "Meter <x>", "cost": 35000, "share": 0.97}],
            "historyDays": 90,
            "seasonality": "weekly",
        }
    )
    assert "<script>" not in html and "&lt;script&gt;" in html and "vm-&lt;b&gt;1&lt;/b&gt;" in html
    for text in ("EUR 36,000.00/day", "EUR 1,500.00/hour", "90 days", "weekly", "Meter &lt;x&gt;", "97%"):
        assert text in html, text
    for verdict in ("planned", "not_anomaly", "confirmed"):
        assert f'id="verdict-{verdict}"' in html
    assert 'action="/api/review/anomalies/ce-1/feedback?t=abc"' in html


def test_the_page_tolerates_an_episode_without_explanation_and_shows_muted_feedback():
    html = _page({}, verdict="planned", suppressed=True)
    assert "Why it was flagged" in html and 'id="muted"' in html and "No feedback yet" in html


def test_a_signed_in_user_is_named_instead_of_asked():
    html = page.render_episode(page.EpisodePage(_episode(), {}, [], "", "/x", signed_in_as="ana@contoso.example"))
    assert "Signed in as <b>ana@contoso.example</b>" in html and 'name="by"' not in html


def test_a_cost_card_gets_a_review_button_first_and_other_cards_do_not():
    alert = Alert(
        kind="cost_anomaly",
        severity="critical",
        title="Cost anomaly",
        resource_id="/subscriptions/s/x",
        owner="payments",
        facts=(),
        links=(("Cost analysis", "https://portal.azure.com/x"),),
        dedupe_key="cost-anomaly:ce-1",
    )
    card = adaptive_card_message(alert_content(alert, "payments", "https://app.example/api/review/anomalies/ce-1?t=x"))
    actions = card["attachments"][0]["content"]["actions"]
    assert [a["title"] for a in actions] == ["Review", "Cost analysis"]
    assert actions[0]["type"] == "Action.OpenUrl"
    plain = adaptive_card_message(alert_content(alert, "payments"))
    assert [a["title"] for a in plain["attachments"][0]["content"]["actions"]] == ["Cost analysis"]
