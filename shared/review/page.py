"""HTML of the review pages (pure: plain data in, a complete HTML document out; no JS framework, no JS).

Everything shown is escaped; the only markup that is not is the chart SVG built by `chart.render_svg`.
The explanation is rendered from whatever keys it has (the scoring engine adds them over time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

VERDICT_LABELS = {"planned": "Planned", "not_anomaly": "Not an anomaly", "confirmed": "Confirmed"}

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f5f6f8;color:#1b1f24}
main{max-width:860px;margin:0 auto;padding:20px}
h1{font-size:1.35rem;margin:.2rem 0}h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:16px;margin-bottom:14px}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:.8rem;margin-right:6px;background:#e8eaed}
.critical{background:#fde2e1;color:#a4262c}.warning{background:#fff1cc;color:#7a5200}
.open{background:#e0efff;color:#004e8c}.closed{background:#dff6dd;color:#107c10}.muted{background:#eee;color:#555}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px;margin:0}dt{color:#5b6570}dd{margin:0}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:4px 6px;border-bottom:1px solid #eceff2}
.bar{background:#c7e0f4;height:8px;border-radius:4px}
.chart .grid{stroke:#eceff2}.chart .tick{font-size:11px;fill:#5b6570}
.chart .band{fill:#0078d4;fill-opacity:.14}.chart .expected{stroke:#0078d4;stroke-dasharray:5 4;stroke-width:1.5}
.chart .band-label{fill:#005a9e}.chart .cost{fill:none;stroke:#1b1f24;stroke-width:1.8}.chart .flagged{fill:#d13438;stroke:#fff;stroke-width:1.5}
form button{font-size:1rem;padding:8px 14px;margin:4px 8px 4px 0;border-radius:6px;border:1px solid #8a96a3;
background:#fff;cursor:pointer}form button.primary{background:#0078d4;color:#fff;border-color:#0078d4}
textarea,input[type=text]{width:100%;box-sizing:border-box;font:inherit;padding:6px;margin:4px 0 8px}
.notice{background:#dff6dd;border-color:#9fd89f}.error{background:#fde7e9;border-color:#f1bbbc}
.small{font-size:.85rem;color:#5b6570}a{color:#005a9e}
"""


@dataclass(frozen=True)
class EpisodePage:
    """What the episode page shows."""

    episode: dict[str, Any]  # CostEpisode.as_dict()
    explanation: dict[str, Any]
    history: Sequence[dict[str, Any]]  # feedback, oldest first
    chart_svg: str
    feedback_action: str  # URL the form posts to (carries the token)
    links: Sequence[tuple[str, str]] = ()
    squad_url: str = ""
    signed_in_as: str = ""
    notice: str = ""
    link_expires: str = ""


@dataclass(frozen=True)
class SquadPage:
    squad: str
    rows: Sequence[dict[str, Any]] = field(default_factory=list)  # episode dicts + "review_url"


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _money(value: Any, currency: str = "USD") -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _e(value)
    symbol = "$" if currency == "USD" else f"{currency} "
    return f"{symbol}{number:,.2f}"


def _document(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer"><meta name="robots" content="noindex">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body><main>{body}</main></body></html>"
    )


def series_label(episode: dict[str, Any]) -> str:
    series = str(episode.get("series_id", ""))
    if episode.get("series_kind") == "resource":
        return series.rstrip("/").split("/")[-1] or series
    return f"{episode.get('series_kind', 'series')} {series}"


def status_badges(episode: dict[str, Any]) -> str:
    out = [f'<span class="badge {_e(episode.get("status", ""))}">{_e(episode.get("status", ""))}</span>']
    severity = str(episode.get("severity", ""))
    out.append(f'<span class="badge {_e(severity)}">{_e(severity)}</span>')
    if episode.get("verdict"):
        out.append(f'<span class="badge muted">{_e(VERDICT_LABELS.get(episode["verdict"], episode["verdict"]))}</span>')
    if episode.get("suppressed"):
        out.append('<span class="badge muted" id="muted">alerts muted</span>')
    return "".join(out)


def _explanation(ex: dict[str, Any]) -> str:
    currency = str(ex.get("currency") or "USD")
    rows: list[tuple[str, str]] = []
    if ex.get("reason"):
        rows.append(("Why flagged", _e(ex["reason"])))
    if "actual" in ex or "expected" in ex:
        rows.append(
            (
                "Actual / expected",
                f"{_money(ex.get('actual'), currency)} / {_money(ex.get('expected'), currency)} a day",
            )
        )
    if "lower" in ex and "upper" in ex:
        rows.append(("Normal band", f"{_money(ex['lower'], currency)} .. {_money(ex['upper'], currency)}"))
    if "excessPerDay" in ex:
        per_hour = f", {_money(ex['excessPerHour'], currency)}/hour" if "excessPerHour" in ex else ""
        rows.append(("Excess", f"{_money(ex['excessPerDay'], currency)}/day{per_hour}"))
    if ex.get("historyDays") is not None:
        rows.append(("History used", f"{_e(ex['historyDays'])} days"))
    if ex.get("seasonality"):
        rows.append(("Seasonality", _e(ex["seasonality"])))
    known = {"reason", "actual", "expected", "lower", "upper", "excessPerDay", "excessPerHour", "historyDays",
             "seasonality", "contributors", "currency"}  # fmt: skip
    for key, value in ex.items():
        if key not in known and isinstance(value, (str, int, float)):
            rows.append((_e(key), _e(value)))
    html = "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"
    contributors = [c for c in ex.get("contributors") or [] if isinstance(c, dict)]
    if contributors:
        html += "<h2>Top contributors</h2><table><tr><th>what</th><th>cost</th><th>share</th><th></th></tr>"
        for c in contributors[:10]:
            share = float(c.get("share") or 0.0)
            html += (
                f"<tr><td>{_e(c.get('name', ''))}</td><td>{_money(c.get('cost', 0), currency)}</td>"
                f"<td>{share:.0%}</td><td style='width:30%'><div class=bar style='width:{max(min(share, 1), 0) * 100:.0f}%'>"
                "</div></td></tr>"
            )
        html += "</table>"
    return html


def _history(history: Sequence[dict[str, Any]]) -> str:
    if not history:
        return '<p class="small" id="history-empty">No feedback yet.</p>'
    rows = "".join(
        f"<tr><td>{_e(h.get('at', ''))}</td><td>{_e(h.get('by', ''))}{' ✓' if h.get('authenticated') else ''}</td>"
        f"<td>{_e(VERDICT_LABELS.get(str(h.get('verdict')), h.get('verdict', '')))}</td><td>{_e(h.get('why', ''))}</td></tr>"
        for h in history
    )
    return f'<table id="history"><tr><th>when (UTC)</th><th>who</th><th>what</th><th>why</th></tr>{rows}</table>'


def render_episode(p: EpisodePage) -> str:
    e = p.episode
    label = series_label(e)
    period = f"{e.get('start_date', '')} .. {e.get('end_date') or e.get('last_flagged_date', '')}"
    who = (
        f'<p class="small">Signed in as <b>{_e(p.signed_in_as)}</b>: your feedback is recorded under that name.</p>'
        if p.signed_in_as
        else '<label class="small">Your name (optional)<input type="text" name="by" maxlength="120"></label>'
    )
    buttons = "".join(
        f'<button type="submit" name="verdict" value="{v}" id="verdict-{v}"'
        f"{' class=primary' if v == 'planned' else ''}>{label_}</button>"
        for v, label_ in VERDICT_LABELS.items()
    )
    links = "".join(f'<li><a href="{_e(url)}" rel="noopener">{_e(title)}</a></li>' for title, url in p.links)
    squad = f'<a href="{_e(p.squad_url)}">all anomalies of squad {_e(e.get("owner"))}</a>' if p.squad_url else ""
    body = (
        (f'<div class="card notice" id="notice">{_e(p.notice)}</div>' if p.notice else "")
        + f'<div class="card"><div>{status_badges(e)}</div><h1>Cost anomaly: {_e(label)}</h1>'
        f'<p class="small">{_e(e.get("series_kind", ""))} <code>{_e(e.get("series_id", ""))}</code></p>'
        f"<dl><dt>Owner</dt><dd>{_e(e.get('owner') or '(untagged)')}</dd><dt>Period</dt><dd>{_e(period)}</dd>"
        f"<dt>Last day</dt><dd>{_money(e.get('cost'))} against {_money(e.get('expected'))} expected</dd>"
        f"<dt>Total excess</dt><dd>{_money(e.get('total_excess_usd'))}</dd></dl></div>"
        f'<div class="card"><h2>Daily cost</h2>{p.chart_svg}<p class="small">Line: daily cost. Red: flagged days. '
        "Shaded, on the scored days: the normal band the engine computed; dashed: its expected level.</p></div>"
        f'<div class="card" id="explanation"><h2>Why it was flagged</h2>{_explanation(p.explanation)}</div>'
        f'<div class="card"><h2>Your feedback</h2><form method="post" action="{_e(p.feedback_action)}">'
        f"{who}<label class=small>Why (optional)<textarea name=why maxlength=1000 rows=2></textarea></label>"
        f"{buttons}</form><p class=small>Planned and Not an anomaly mute this series' alerts for a while; "
        f"Confirmed keeps them.</p><h2>History</h2>{_history(p.history)}</div>"
        f'<div class="card"><h2>Links</h2><ul>{links}</ul>{squad}'
        + (f'<p class="small">This link is valid until {_e(p.link_expires)}.</p>' if p.link_expires else "")
        + "</div>"
    )
    return _document(f"Cost anomaly: {label}", body)


def render_squad(p: SquadPage) -> str:
    rows = "".join(
        f'<tr><td>{status_badges(r)}</td><td><a href="{_e(r.get("review_url", ""))}">{_e(series_label(r))}</a></td>'
        f"<td>{_e(r.get('start_date', ''))}</td><td>{_money(r.get('excess_usd_per_day'))}/day</td></tr>"
        for r in p.rows
    )
    table = (
        f"<table id=episodes><tr><th>status</th><th>series</th><th>since</th><th>excess</th></tr>{rows}</table>"
        if p.rows
        else "<p>No cost anomalies for this squad.</p>"
    )
    return _document(
        f"Cost anomalies of {p.squad}",
        f'<div class="card"><h1>Cost anomalies of squad {_e(p.squad)}</h1>{table}</div>',
    )


def render_error(status: int, title: str, detail: str) -> str:
    return _document(
        title, f'<div class="card error"><h1>{_e(title)}</h1><p>{_e(detail)}</p><p class=small>HTTP {status}</p></div>'
    )
