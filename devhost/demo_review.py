"""`make demo` step: open a cost card's "Review" link the way Teams would, and print it.

The card in the outbox carries a signed, expiring link to the episode's review page; the step fetches it
without the function key (as a browser from Teams does), checks the page has its chart, and saves a copy.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def review_links(outbox_dir: str) -> list[tuple[str, str]]:
    """(card title, Review URL) of every Teams card in the outbox that has a Review button."""
    from shared.alerts.outbox import Outbox

    out: list[tuple[str, str]] = []
    for entry in Outbox(outbox_dir).entries():
        if entry.channel != "teams":
            continue
        card = (entry.payload().get("attachments") or [{}])[0].get("content") or {}
        title = next((b.get("text", "") for b in card.get("body", []) if b.get("type") == "TextBlock"), "")
        out.extend((title, a["url"]) for a in card.get("actions", []) if a.get("title") == "Review")
    return out


def step_review(ctx: Any) -> None:
    settings = ctx.runtime.settings
    links = review_links(settings.outbox_dir)
    if not links:
        raise RuntimeError("no cost card with a Review button in the outbox")
    title, url = max(links, key=lambda link: _excess_per_day(link[0]))
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # no function key: the token is the credential
            status, html = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, html = err.code, err.read().decode()
    copy = Path(settings.state_dir) / "review-page.html"
    copy.write_text(html)
    has_chart = "<svg" in html and 'class="cost"' in html
    ctx.summary.append(
        f"{len(links)} cost card(s) carry a Review button; opened one: HTTP {status}, chart {'shown' if has_chart else 'MISSING'}"
    )
    ctx.summary.append(f"card: {title}")
    ctx.summary.append(f"review link (signed, expires in {settings.review_link_days} days): {url}")
    ctx.summary.append(
        f"a copy of the page: {copy} (the link itself answers while the demo host runs: make demo SERVE=1)"
    )
    if status != 200 or not has_chart:
        raise RuntimeError(f"the review page answered {status}")


def _excess_per_day(title: str) -> float:
    """The `+$36,003/day` of a card title (0 when absent): the demo opens the biggest anomaly."""
    match = re.search(r"\+\$([\d,.]+)/day", title)
    return float(match.group(1).replace(",", "")) if match else 0.0
