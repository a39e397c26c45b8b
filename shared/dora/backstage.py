"""Backstage catalog components as services (name, owner squad, alias annotations): `dora services sync-catalog`.

Reads `GET <BACKSTAGE_URL>/api/catalog/entities/by-query?filter=kind=component` with the static token
(`Authorization: Bearer BACKSTAGE_TOKEN`), following `pageInfo.nextCursor`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import requests

from shared.dora import store
from shared.dora.services import from_backstage_entities
from shared.errors import SettingsError, TransientUpstreamError, UpstreamAuthError, UpstreamError
from shared.retry import parse_retry_after

if TYPE_CHECKING:
    from shared.runtime import Runtime

PAGE = 200


def catalog_components(base_url: str, token: str, *, timeout: float = 15.0) -> Iterator[dict[str, Any]]:
    """Every Component entity of the catalog."""
    if not base_url:
        raise SettingsError("BACKSTAGE_URL is empty: set the Backstage backend URL to read the catalog")
    session = requests.Session()
    session.trust_env = False
    headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    params: dict[str, Any] = {"filter": "kind=component", "limit": PAGE}
    url = base_url.rstrip("/") + "/api/catalog/entities/by-query"
    for _ in range(10_000):
        try:
            resp = session.get(url, params=params, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            raise TransientUpstreamError(f"Backstage catalog request failed: {type(exc).__name__}") from None
        if resp.status_code in (401, 403):
            raise UpstreamAuthError(f"Backstage answered {resp.status_code}: check BACKSTAGE_TOKEN")
        if resp.status_code == 429 or resp.status_code >= 500:
            raise TransientUpstreamError(
                f"Backstage answered {resp.status_code}", retry_after=parse_retry_after(resp.headers.get("Retry-After"))
            )
        if resp.status_code >= 400:
            raise UpstreamError(f"Backstage answered {resp.status_code} to {url}")
        try:
            doc = resp.json()
        except ValueError:
            raise UpstreamError("Backstage catalog answer is not JSON") from None
        yield from doc.get("items") or []
        cursor = (doc.get("pageInfo") or {}).get("nextCursor")
        if not cursor:
            return
        params = {"cursor": cursor, "limit": PAGE}


def sync_catalog(runtime: Runtime) -> dict[str, int]:
    """Replace the `backstage` rows of SERVICE_MAP / SERVICE_ALIASES with the catalog's components."""
    s = runtime.settings
    mapping = from_backstage_entities(catalog_components(s.backstage_url, s.backstage_token))
    with runtime.warehouse.session() as wh:
        written = store.replace_service_map(wh, mapping, "backstage")
    return {"components": written}
