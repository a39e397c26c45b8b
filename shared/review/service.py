"""The review capability's adapters: the link secret, signed URLs, and loading what the pages show.

Pure rendering lives in `page.py` and `chart.py`, token maths in `tokens.py`; this module reads the
warehouse (episode, its daily cost, feedback history) and settings, and is what `functions/review.py`
and the card builder call.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from shared.errors import BadInputError, NotFoundError, SettingsError
from shared.review import chart, page, tokens
from shared.review import feedback as feedback_store
from shared.settings import Settings

log = logging.getLogger(__name__)

SECRET_FILE = "review-link-secret"
CHART_DAYS = 56
ALERT_PREFIX = "cost-anomaly:"
_LOCAL_MARKERS = ("usedevelopmentstorage=true", "devstoreaccount1")


def is_local_emulator(settings: Settings) -> bool:
    conn = settings.azure_web_jobs_storage.replace(" ", "").lower()
    return not settings.storage_identity_based() and any(m in conn for m in _LOCAL_MARKERS)


def review_secret(settings: Settings) -> bytes | None:
    """REVIEW_LINK_SECRET; on a local emulator without one, a secret generated once under the state dir;
    None otherwise (review links are then off, and doctor says so)."""
    if settings.review_link_secret:
        return settings.review_link_secret.encode()
    if not is_local_emulator(settings):
        return None
    path = Path(settings.state_dir) / SECRET_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32))
        except FileExistsError:
            pass  # another process made it first: use theirs
    return path.read_text().strip().encode()


def require_secret(settings: Settings) -> bytes:
    secret = review_secret(settings)
    if secret is None:
        raise SettingsError("review links are off: set REVIEW_LINK_SECRET (a Key Vault reference in Azure)")
    return secret


def base_url(settings: Settings) -> str:
    if settings.review_base_url:
        return settings.review_base_url
    if settings.website_hostname:
        return f"https://{settings.website_hostname}"
    return f"http://127.0.0.1:{settings.valueflow_port}"


def episode_path(episode_id: str) -> str:
    return f"/api/review/anomalies/{quote(episode_id, safe='')}"


def review_url(settings: Settings, episode_id: str, now: datetime | None = None) -> str | None:
    """The signed link to the episode's review page, or None when review links are off."""
    secret = review_secret(settings)
    if secret is None:
        return None
    token = tokens.mint(secret, tokens.episode_scope(episode_id), settings.review_link_days, now)
    return f"{base_url(settings)}{episode_path(episode_id)}?{urlencode({'t': token})}"


def squad_url(settings: Settings, squad: str, now: datetime | None = None) -> str | None:
    secret = review_secret(settings)
    if secret is None or not squad:
        return None
    token = tokens.mint(secret, tokens.squad_scope(squad), settings.review_link_days, now)
    return f"{base_url(settings)}/api/review?{urlencode({'squad': squad, 't': token})}"


def review_link_for_alert(settings: Settings, alert: Any) -> str | None:
    """The "Review" button of a cost anomaly card (None for other alerts, or when links are off)."""
    key = str(getattr(alert, "dedupe_key", ""))
    if getattr(alert, "kind", "") != "cost_anomaly" or not key.startswith(ALERT_PREFIX):
        return None
    try:
        return review_url(settings, key[len(ALERT_PREFIX) :])
    except OSError as exc:  # an unreadable local secret must not stop a card
        log.warning("no review link on the card: %s", exc)
        return None


# -- what the pages and the API show ------------------------------------------------------------------------


def explanation_of(episode: Any) -> dict[str, Any]:
    """The engine's explanation of the episode (stored with its latest flagged day, or rebuilt from its
    figures for an episode recorded before explanations existed)."""
    from shared.costs.explain import explain_episode

    return explain_episode(episode)


EPISODE_ID = re.compile(r"^ce-[0-9a-f]{20}$")  # shared.costs.episodes.episode_id


def check_episode_id(episode_id: str) -> str:
    """An id that cannot be an episode's is answered at once, without opening the warehouse."""
    if not EPISODE_ID.match(episode_id):
        raise NotFoundError(f"no cost anomaly episode {episode_id[:80]!r} (episode ids look like ce-<20 hex>)")
    return episode_id


def _load_episode(wh: Any, episode_id: str) -> Any:
    from shared.costs.explain import with_explanations
    from shared.costs.store import get_episode

    episode = get_episode(wh, episode_id)
    if episode is None:
        raise NotFoundError(f"no cost anomaly episode {episode_id!r}")
    return with_explanations(wh, {episode_id: episode})[episode_id]


def series_history(wh: Any, kind: str, series_id: str, start: date, end: date) -> list[tuple[date, float]]:
    """Daily usage cost of one series (the same sums the daily job scores), oldest first."""
    from shared.costs.store import SERIES_COLUMN, UNOWNED

    if kind not in SERIES_COLUMN:
        return []
    column = SERIES_COLUMN[kind]
    expr = column if kind == "resource" else f"COALESCE(NULLIF({column}, ''), '{UNOWNED}')"
    rows = wh.query(
        f"SELECT USAGE_DATE, SUM(COST) AS COST FROM COST_DAILY WHERE IS_USAGE AND {expr} = %s "
        "AND USAGE_DATE BETWEEN %s AND %s GROUP BY USAGE_DATE ORDER BY USAGE_DATE",
        (series_id, start, end),
    )
    out = []
    for r in rows:
        d = r["USAGE_DATE"]
        out.append(
            (
                d.date() if isinstance(d, datetime) else d if isinstance(d, date) else date.fromisoformat(str(d)[:10]),
                float(r["COST"] or 0.0),
            )
        )
    return out


def episode_links(settings: Settings, episode: Any) -> list[tuple[str, str]]:
    from shared.alerts.incidents import correlation_id_for

    links: list[tuple[str, str]] = []
    if episode.series_kind == "resource" and episode.series_id.startswith("/subscriptions/"):
        links.append(
            (
                "Cost analysis in the Azure portal",
                f"https://portal.azure.com/#@/resource{episode.series_id}/costanalysis",
            )
        )
    elif episode.series_kind == "subscription":
        links.append(
            (
                "Cost analysis in the Azure portal",
                f"https://portal.azure.com/#@/resource/subscriptions/{episode.series_id}/costanalysis",
            )
        )
    if settings.servicenow_instance_url:
        query = urlencode({"sysparm_query": f"correlation_id={correlation_id_for(ALERT_PREFIX + episode.episode_id)}"})
        links.append(("ServiceNow incident", f"{settings.servicenow_instance_url}/incident_list.do?{query}"))
    return links


def episode_detail(runtime: Any, episode_id: str) -> dict[str, Any]:
    """`GET /api/anomalies/{id}`: the episode, its explanation and its feedback history (camelCase)."""
    from shared.approvals.anomalies import episode_view

    check_episode_id(episode_id)
    with runtime.warehouse.session() as wh:
        episode = _load_episode(wh, episode_id)
        entries = feedback_store.history(wh, episode_id)
    doc = episode_view(episode).as_wire()
    doc.update(
        {
            "endDate": episode.end_date.isoformat() if episode.end_date else None,
            "suppressed": episode.suppressed,
            "explanation": explanation_of(episode),
            "feedback": [e.as_dict() for e in entries],
            "links": [{"title": t, "url": u} for t, u in episode_links(runtime.settings, episode)],
        }
    )
    url = review_url(runtime.settings, episode_id)
    if url:
        doc["reviewUrl"] = url
    return doc


def verify_episode_token(settings: Settings, episode_id: str, token: str) -> datetime:
    return tokens.verify(require_secret(settings), token, tokens.episode_scope(episode_id))


def render_episode_page(runtime: Any, episode_id: str, token: str, *, signed_in_as: str = "", notice: str = "") -> str:
    """The HTML page of one episode, after checking the link's token."""
    settings = runtime.settings
    expires = verify_episode_token(settings, episode_id, token)
    check_episode_id(episode_id)
    with runtime.warehouse.session() as wh:
        episode = _load_episode(wh, episode_id)
        end = max(episode.last_scored_date, episode.last_flagged_date)
        start = min(episode.start_date - timedelta(days=CHART_DAYS - 1), end - timedelta(days=CHART_DAYS - 1))
        points = series_history(wh, episode.series_kind, episode.series_id, start, end)
        entries = feedback_store.history(wh, episode_id)
    explanation = explanation_of(episode)
    last_flagged = episode.end_date or episode.last_flagged_date
    flagged = frozenset(d for d, _ in points if episode.start_date <= d <= last_flagged)
    svg = chart.render_svg(
        chart.ChartInput(
            days=[d for d, _ in points],
            costs=[c for _, c in points],
            expected=float(explanation.get("expected", episode.expected) or 0.0),
            lower=float(explanation.get("lower", episode.lower) or 0.0),
            upper=float(explanation.get("upper", episode.upper) or 0.0),
            flagged=flagged,
            band_from=episode.start_date,
            currency=str(explanation.get("currency") or "USD"),
        )
    )
    action = f"{episode_path(episode_id)}/feedback?{urlencode({'t': token})}"
    return page.render_episode(
        page.EpisodePage(
            episode=episode.as_dict(),
            explanation=explanation,
            history=[e.as_dict() for e in entries],
            chart_svg=svg,
            feedback_action=action,
            links=episode_links(settings, episode),
            squad_url=squad_url(settings, episode.owner) or "" if episode.owner else "",
            signed_in_as=signed_in_as,
            notice=notice,
            link_expires=f"{expires:%Y-%m-%d %H:%M} UTC",
        )
    )


def submit_feedback(runtime: Any, episode_id: str, token: str, form: dict[str, str], *, signed_in_as: str = "") -> str:
    """The feedback form's POST: check the token, record the verdict; returns where to redirect (the page)."""
    verify_episode_token(runtime.settings, episode_id, token)
    verdict = (form.get("verdict") or "").strip()
    if verdict not in page.VERDICT_LABELS:
        raise BadInputError(f"verdict must be one of {', '.join(page.VERDICT_LABELS)}, got {verdict!r}")
    by = signed_in_as or (form.get("by") or "").strip() or "anonymous (review link)"
    feedback_store.record_feedback(
        runtime, episode_id, verdict, by, form.get("why") or "", source="review-page", authenticated=bool(signed_in_as)
    )
    return f"{episode_path(episode_id)}?{urlencode({'t': token, 'done': verdict})}"


def render_squad_page(runtime: Any, squad: str, token: str) -> str:
    settings = runtime.settings
    squad = squad.strip()
    if not squad:
        raise BadInputError("say which squad: /api/review?squad=<name>&t=<signed link>")
    tokens.verify(require_secret(settings), token, tokens.squad_scope(squad))
    from shared.costs.feedback import list_episodes

    rows = []
    for doc in list_episodes(runtime, None, squad):
        rows.append({**doc, "review_url": review_url(settings, str(doc["episode_id"])) or ""})
    return page.render_squad(page.SquadPage(squad=squad, rows=rows))
