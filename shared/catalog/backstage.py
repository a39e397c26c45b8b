"""Backstage catalog backend: refresh an entity, register a location (static external-access token).

`POST {BACKSTAGE_URL}/api/catalog/refresh` with `{"entityRef"}` marks the entity for processing now;
`POST /api/catalog/locations` with `{"type": "url", "target"}` registers a new file (409: already
registered). The token goes as `Authorization: Bearer` (backend.auth.externalAccess, type static).
Errors: timeouts, 429 (Retry-After) and 5xx -> TransientUpstreamError; 401/403 -> UpstreamAuthError
(logged once per process); other 4xx -> UpstreamError with Backstage's error message.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from shared.errors import SettingsError, TransientUpstreamError, UpstreamAuthError, UpstreamError
from shared.retry import parse_retry_after
from shared.settings import Settings

log = logging.getLogger(__name__)


class BackstageCatalog:
    _auth_reported = False

    def __init__(
        self, base_url: str, token: str, *, timeout: float = 10.0, session: requests.Session | None = None
    ) -> None:
        if not base_url:
            raise SettingsError("BACKSTAGE_URL is empty: catalog refresh is off")
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.trust_env = False

    @classmethod
    def from_settings(cls, settings: Settings) -> BackstageCatalog:
        return cls(settings.backstage_url, settings.backstage_token)

    def _post(self, path: str, body: dict[str, Any]) -> requests.Response:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            resp = self.session.post(self.base + path, json=body, headers=headers, timeout=self.timeout)
        except requests.Timeout:
            raise TransientUpstreamError(f"Backstage POST {path} timed out after {self.timeout:g}s") from None
        except requests.RequestException as exc:
            raise TransientUpstreamError(f"Backstage unreachable ({type(exc).__name__})") from None
        status = resp.status_code
        if status in (401, 403):
            detail = f"Backstage POST {path} answered {status}: check BACKSTAGE_TOKEN (a static external-access token)"
            if not BackstageCatalog._auth_reported:
                BackstageCatalog._auth_reported = True
                log.error("CONFIGURATION ERROR: %s", detail)
            raise UpstreamAuthError(detail)
        if status == 429 or status >= 500:
            raise TransientUpstreamError(
                f"Backstage POST {path} answered {status}",
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            )
        return resp

    def refresh(self, entity_ref: str) -> bool:
        """Ask for an immediate refresh; False when the catalog does not know the entity (404)."""
        resp = self._post("/api/catalog/refresh", {"entityRef": entity_ref})
        if resp.status_code == 404:
            return False
        if resp.status_code >= 400:
            raise UpstreamError(f"Backstage refresh of {entity_ref} answered {resp.status_code}: {_message(resp)}")
        return True

    def register_location(self, target: str) -> str:
        """Register a catalog file URL: "registered", or "exists" when Backstage already has it (409)."""
        resp = self._post("/api/catalog/locations", {"type": "url", "target": target})
        if resp.status_code == 409:
            return "exists"
        if resp.status_code >= 400:
            raise UpstreamError(f"Backstage location {target} answered {resp.status_code}: {_message(resp)}")
        return "registered"


def _message(resp: requests.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return resp.reason or "no message"
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:300]
    return resp.reason or "no message"
