"""Teams messages for alerts: Adaptive Card 1.4 for Workflows webhooks, MessageCard for legacy connectors.

Pure: an `Alert` (or a digest of several) in, the exact JSON to post out. Every payload stays
under `MAX_CARD_BYTES` (Teams rejects messages over ~28 KB): long texts are cut first, then facts
are dropped from the end with a note saying how many; building a card never fails.
Only `Action.OpenUrl` is used: webhooks cannot call back `Action.Submit`/`Action.Execute`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from shared.alerts.model import Alert

MAX_CARD_BYTES = 27 * 1024
ADAPTIVE_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
_COLOR = {"critical": "attention", "warning": "warning", "info": "accent"}
_THEME = {"critical": "D13438", "warning": "F7A600", "info": "0078D4"}
_PREFIX = {"open": "", "update": "Updated: ", "resolve": "Resolved: "}


def is_legacy_webhook(url: str) -> bool:
    """An Office 365 connector URL (`*.webhook.office.com/webhookb2/...`): those take MessageCards."""
    parsed = urlparse(url)
    host = (parsed.hostname or "").lower()
    return (host == "webhook.office.com" or host.endswith(".webhook.office.com")) and "/webhookb2/" in parsed.path


@dataclass(frozen=True)
class CardContent:
    """What a card shows, before it is laid out for one format."""

    title: str
    subtitle: str
    summary: str
    facts: tuple[tuple[str, str], ...]
    links: tuple[tuple[str, str], ...]
    severity: str
    resolved: bool = False


def alert_content(alert: Alert, squad: str, review_url: str | None = None) -> CardContent:
    """The content of one alert's card; `review_url` (cost anomalies) becomes its first button, "Review"."""
    subtitle = f"{alert.severity.upper()} · {alert.kind.replace('_', ' ')} · squad {squad or 'default'}"
    facts = ((("Resource", alert.resource_id),) if alert.resource_id else ()) + alert.facts
    return CardContent(
        title=_PREFIX.get(alert.action, "") + alert.title,
        subtitle=subtitle,
        summary=alert.summary,
        facts=facts,
        links=((("Review", review_url),) if review_url else ()) + alert.links,
        severity=alert.severity,
        resolved=alert.action == "resolve",
    )


def digest_content(squad: str, alerts: Sequence[Alert], window_minutes: int) -> CardContent:
    """One card standing for a storm of alerts to a squad."""
    worst = "critical" if any(a.severity == "critical" for a in alerts) else "warning"
    counts: dict[str, int] = {}
    for a in alerts:
        counts[a.kind] = counts.get(a.kind, 0) + 1
    by_kind = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(counts.items()))
    facts = tuple((f"{a.severity.upper()} {_PREFIX.get(a.action, '')}".strip(), a.title) for a in alerts)
    return CardContent(
        title=f"{len(alerts)} more alerts for squad {squad or 'default'} within {window_minutes} minutes",
        subtitle=f"Alert storm digest · {by_kind}",
        summary="Storm control grouped these alerts into one card; each one is listed below.",
        facts=facts,
        links=(),
        severity=worst,
    )


def teams_payload(content: CardContent, webhook_url: str) -> dict[str, Any]:
    """The JSON to post to this webhook: a MessageCard for legacy connector URLs, else an Adaptive Card."""
    build = message_card if is_legacy_webhook(webhook_url) else adaptive_card_message
    return fit(content, build)


def adaptive_card_message(c: CardContent) -> dict[str, Any]:
    """A Workflows webhook message carrying one Adaptive Card 1.4."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": c.title,
            "size": "Large",
            "weight": "Bolder",
            "wrap": True,
            "color": "good" if c.resolved else _COLOR.get(c.severity, "default"),
        },
        {"type": "TextBlock", "text": c.subtitle, "isSubtle": True, "spacing": "None", "wrap": True},
    ]
    if c.summary:
        body.append({"type": "TextBlock", "text": c.summary, "wrap": True})
    if c.facts:
        body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in c.facts]})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    }
    if c.links:
        card["actions"] = [{"type": "Action.OpenUrl", "title": t, "url": u} for t, u in c.links]
    return {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }


def message_card(c: CardContent) -> dict[str, Any]:
    """A legacy Office 365 connector MessageCard (the shape pymsteams builds)."""
    section: dict[str, Any] = {"activityTitle": c.subtitle}
    if c.summary:
        section["text"] = c.summary
    if c.facts:
        section["facts"] = [{"name": k, "value": v} for k, v in c.facts]
    card: dict[str, Any] = {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": c.title[:200],
        "themeColor": "2E7D32" if c.resolved else _THEME.get(c.severity, "0078D4"),
        "title": c.title,
        "sections": [section],
    }
    if c.links:
        card["potentialAction"] = [
            {"@type": "OpenUri", "name": t, "targets": [{"os": "default", "uri": u}]} for t, u in c.links
        ]
    return card


def payload_size(payload: dict[str, Any]) -> int:
    return len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def fit(content: CardContent, build: Any, limit: int = MAX_CARD_BYTES) -> dict[str, Any]:
    """Build the card, cutting texts and then dropping facts until it is under `limit` bytes."""
    payload: dict[str, Any] = build(content)
    if payload_size(payload) <= limit:
        return payload
    # 1) cut long texts; most cards fit after this
    c = CardContent(
        title=_cut(content.title, 250),
        subtitle=_cut(content.subtitle, 250),
        summary=_cut(content.summary, 2000),
        facts=tuple((_cut(k, 100), _cut(v, 400)) for k, v in content.facts),
        links=content.links[:5],
        severity=content.severity,
        resolved=content.resolved,
    )
    payload = build(c)
    if payload_size(payload) <= limit:
        return payload
    # 2) keep the longest prefix of facts that fits, plus a note of how many were left out
    lo, hi = 0, len(c.facts)
    best = _with_facts(c, 0, len(c.facts))
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = build(_with_facts(c, mid, len(c.facts)))
        if payload_size(candidate) <= limit:
            best, lo = _with_facts(c, mid, len(c.facts)), mid + 1
        else:
            hi = mid - 1
    payload = build(best)
    if payload_size(payload) <= limit:
        return payload
    # 3) last resort (huge links or titles): a minimal card that still says what happened
    minimal = CardContent(
        _cut(c.title, 200), _cut(c.subtitle, 200), _cut(c.summary, 500), best.facts[-1:], (), c.severity, c.resolved
    )
    return build(minimal)


def _with_facts(c: CardContent, keep: int, total: int) -> CardContent:
    facts = c.facts[:keep]
    if keep < total:
        facts = facts + (("…", f"{total - keep} more facts left out to fit the Teams size limit"),)
    return CardContent(c.title, c.subtitle, c.summary, facts, c.links, c.severity, c.resolved)


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
