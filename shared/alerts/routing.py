"""Who gets an alert: squad -> Teams webhook, ServiceNow assignment group, CMDB CI.

`ALERT_ROUTES` is JSON, or a path to a JSON/YAML file, shaped like

    {"default": {"teams_webhook_url": "...", "servicenow_assignment_group": "Cloud Platform"},
     "routes": {"squad-payments": {"teams_webhook_url": "...", "servicenow_assignment_group": "Payments Ops",
                                   "cmdb_ci": "payments-api", "servicenow_category": "software"}}}

A squad's missing fields fall back to the default route; the default Teams URL falls back to
`TEAMS_DEFAULT_WEBHOOK_URL`. Validation names the squad and the field (`SettingsError`).
Pure apart from reading the routing file named by the setting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from shared.alerts.model import Alert
from shared.errors import SettingsError
from shared.settings import Settings
from shared.urls import outbound_problem

ROUTE_FIELDS = ("teams_webhook_url", "servicenow_assignment_group", "cmdb_ci", "servicenow_category")
DEFAULT_CATEGORY = "software"


@dataclass(frozen=True)
class AlertRoute:
    """Where one squad's alerts go. An empty `teams_webhook_url` means the local outbox."""

    squad: str
    teams_webhook_url: str = ""
    servicenow_assignment_group: str = ""
    cmdb_ci: str = ""
    servicenow_category: str = DEFAULT_CATEGORY

    def __repr__(self) -> str:  # the webhook URL is a secret
        return f"AlertRoute(squad={self.squad!r}, teams={'set' if self.teams_webhook_url else 'outbox'}, group={self.servicenow_assignment_group!r})"


@dataclass(frozen=True)
class AlertRoutes:
    default: AlertRoute
    squads: dict[str, AlertRoute]


def owner_from_tags(tags: dict[str, str] | None, keys: tuple[str, ...]) -> str:
    """The owner squad from resource tags: the first of `keys` present (case-insensitive), else ""."""
    if not tags:
        return ""
    lowered = {str(k).lower(): v for k, v in tags.items()}
    for key in keys:
        value = lowered.get(key.lower())
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def host_allowed(url: str, patterns: tuple[str, ...]) -> bool:
    """True when the URL may be posted to: its host matches an allow-list pattern (`*.logic.azure.com`)
    or is loopback, checked by `shared.urls` (the parser that sends, plainly written hosts, IP
    literals only verbatim).

    Loopback is always allowed: it is where tests and the local fakes listen, and it cannot leak data."""
    return url_problem(url, patterns) is None


def url_problem(url: str, patterns: tuple[str, ...]) -> str | None:
    """Why a Teams webhook URL may not be posted to, or None (never echoes the URL: it is a secret)."""
    return outbound_problem(url, patterns, setting="TEAMS_WEBHOOK_ALLOWED_HOSTS", loopback_always=True)


def _check_url(url: Any, where: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(url, str):
        raise SettingsError(f"ALERT_ROUTES: {where}.teams_webhook_url must be a string")
    url = url.strip()
    if not url:
        return ""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingsError(f"ALERT_ROUTES: {where}.teams_webhook_url is not an http(s) URL (value hidden)")
    problem = url_problem(url, allowed)
    if problem:
        if problem == "must use https":
            problem = "must be https (plain http only for loopback)"
        raise SettingsError(f"ALERT_ROUTES: {where}.teams_webhook_url {problem} (value hidden)")
    return url


def _route(squad: str, doc: Any, where: str, allowed: tuple[str, ...], base: AlertRoute | None) -> AlertRoute:
    if not isinstance(doc, dict):
        raise SettingsError(f"ALERT_ROUTES: {where} must be an object with {', '.join(ROUTE_FIELDS)}")
    unknown = sorted(set(doc) - set(ROUTE_FIELDS))
    if unknown:
        raise SettingsError(
            f"ALERT_ROUTES: {where}.{unknown[0]} is not a route field (expected {', '.join(ROUTE_FIELDS)})"
        )
    for name in ROUTE_FIELDS[1:]:
        if name in doc and not isinstance(doc[name], str):
            raise SettingsError(f"ALERT_ROUTES: {where}.{name} must be a string")
    url = _check_url(doc.get("teams_webhook_url", ""), where, allowed)
    fallback = base or AlertRoute(squad="")
    return AlertRoute(
        squad=squad,
        teams_webhook_url=url or fallback.teams_webhook_url,
        servicenow_assignment_group=(doc.get("servicenow_assignment_group") or "").strip()
        or fallback.servicenow_assignment_group,
        cmdb_ci=(doc.get("cmdb_ci") or "").strip() or fallback.cmdb_ci,
        servicenow_category=(doc.get("servicenow_category") or "").strip() or fallback.servicenow_category,
    )


def _read(raw: str) -> Any:
    text = raw.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"ALERT_ROUTES: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    path = Path(text)
    if not path.is_file():
        raise SettingsError(f"ALERT_ROUTES: neither inline JSON nor an existing file: {path}")
    content = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(content)
        except yaml.YAMLError as exc:
            raise SettingsError(f"ALERT_ROUTES: {path} is not valid YAML ({exc})") from None
    try:
        return json.loads(content)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"ALERT_ROUTES: {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def parse_routes(doc: Any, *, default_webhook_url: str, allowed_hosts: tuple[str, ...]) -> AlertRoutes:
    """Validate a routing document; SettingsError naming the squad and field on the first problem."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise SettingsError('ALERT_ROUTES: expected an object {"default": {...}, "routes": {"<squad>": {...}}}')
    unknown = sorted(set(doc) - {"default", "routes"})
    if unknown:
        raise SettingsError(f"ALERT_ROUTES: unknown top-level key {unknown[0]!r} (expected default, routes)")
    default_url = _check_url(default_webhook_url, "TEAMS_DEFAULT_WEBHOOK_URL", allowed_hosts)
    default = _route(
        "", doc.get("default") or {}, "default", allowed_hosts, AlertRoute("", teams_webhook_url=default_url)
    )
    routes = doc.get("routes") or {}
    if not isinstance(routes, dict):
        raise SettingsError("ALERT_ROUTES: routes must be an object of squad name -> route")
    squads: dict[str, AlertRoute] = {}
    for squad, body in routes.items():
        name = str(squad).strip()
        if not name:
            raise SettingsError("ALERT_ROUTES: routes has an empty squad name")
        if name.lower() in squads:
            raise SettingsError(f"ALERT_ROUTES: squad {name!r} is listed twice (names are case-insensitive)")
        squads[name.lower()] = _route(name, body, f"routes.{name}", allowed_hosts, default)
    return AlertRoutes(default, squads)


def load_routes(settings: Settings) -> AlertRoutes:
    """The routes of `ALERT_ROUTES` (+ `TEAMS_DEFAULT_WEBHOOK_URL`), validated; SettingsError otherwise."""
    doc = _read(settings.alert_routes) if settings.alert_routes.strip() else {}
    return parse_routes(
        doc,
        default_webhook_url=settings.teams_default_webhook_url,
        allowed_hosts=settings.teams_webhook_allowed_hosts,
    )


def route_for(alert: Alert, routes: AlertRoutes) -> AlertRoute:
    """The squad's route (case-insensitive), or the default route named after the owner."""
    found = routes.squads.get(alert.owner.strip().lower()) if alert.owner else None
    if found is not None:
        return found
    return replace(routes.default, squad=alert.owner.strip() or "default")
