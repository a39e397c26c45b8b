"""ServiceNow Table API for incidents: find by correlation id, create, append work notes, resolve.

Auth: basic (`SERVICENOW_USERNAME`/`SERVICENOW_PASSWORD`) or OAuth client credentials
(`SERVICENOW_CLIENT_ID`/`SERVICENOW_CLIENT_SECRET`, `POST /oauth_token.do`, token cached until
shortly before it expires). Errors: 429 (with `Retry-After`), 5xx, timeouts -> `TransientUpstreamError`;
401/403 -> `UpstreamAuthError`, logged loudly once per process (a configuration problem: retrying
will not help); other 4xx -> `UpstreamError`. A create that times out is never re-sent blindly:
`create()` re-queries by correlation id and only reports "retry" when nothing was created.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from shared.adapters.http import pooled_session
from shared.alerts.incidents import active_incident_query
from shared.errors import SettingsError, TransientUpstreamError, UpstreamAuthError, UpstreamError
from shared.retry import retry_after_from
from shared.settings import Settings

log = logging.getLogger(__name__)

INCIDENT_PATH = "/api/now/table/incident"
TOKEN_PATH = "/oauth_token.do"
RETURN_FIELDS = "sys_id,number,state,correlation_id"


class ServiceNowClient:
    _auth_reported = False  # one loud report per process, not one per alert

    def __init__(
        self,
        instance_url: str,
        *,
        username: str = "",
        password: str = "",
        client_id: str = "",
        client_secret: str = "",
        timeout: float = 10.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not instance_url:
            raise SettingsError("SERVICENOW_INSTANCE_URL is empty: incidents go to the outbox instead")
        self.base = instance_url.rstrip("/")
        self.username = username
        self.password = password
        self.client_id = client_id
        self.client_secret = client_secret
        self.timeout = timeout
        self.session = session or pooled_session()
        self.clock = clock
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, session: requests.Session | None = None) -> ServiceNowClient:
        return cls(
            settings.servicenow_instance_url,
            username=settings.servicenow_username,
            password=settings.servicenow_password,
            client_id=settings.servicenow_client_id,
            client_secret=settings.servicenow_client_secret,
            timeout=settings.alert_http_timeout_seconds,
            session=session,
        )

    @property
    def uses_oauth(self) -> bool:
        return bool(self.client_id and self.client_secret)

    # -- auth --

    def _bearer(self) -> str:
        with self._lock:
            if self._token and self._token[1] > self.clock():
                return self._token[0]
        data = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.client_secret}
        try:
            resp = self.session.post(self.base + TOKEN_PATH, data=data, timeout=self.timeout)
        except requests.Timeout:
            raise TransientUpstreamError("ServiceNow token request timed out") from None
        except requests.RequestException as exc:
            raise TransientUpstreamError(f"ServiceNow unreachable ({type(exc).__name__})") from None
        if resp.status_code in (400, 401, 403):
            raise self._auth_error(resp.status_code, "the OAuth client credentials were refused")
        self._raise_for_status(resp, "token request")
        try:
            doc = resp.json()
            token = str(doc["access_token"])
            expires_in = float(doc.get("expires_in", 1800))
        except (ValueError, KeyError, TypeError):
            raise UpstreamError("ServiceNow token response has no access_token") from None
        with self._lock:
            # renew a minute early so a token never expires mid-request
            self._token = (token, self.clock() + max(0.0, expires_in - 60))
        return token

    def _auth_error(self, status: int, what: str) -> UpstreamAuthError:
        err = UpstreamAuthError(
            f"ServiceNow refused our credentials ({status}): {what}; check SERVICENOW_USERNAME/PASSWORD or "
            "SERVICENOW_CLIENT_ID/SECRET and the integration user's roles"
        )
        if not ServiceNowClient._auth_reported:
            ServiceNowClient._auth_reported = True
            log.error("CONFIGURATION ERROR: %s", err.detail)
        return err

    # -- requests --

    def _request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        for attempt in (1, 2):
            headers = {"Accept": "application/json"}
            auth: tuple[str, str] | None = None
            if self.uses_oauth:
                headers["Authorization"] = "Bearer " + self._bearer()
            else:
                auth = (self.username, self.password)
            try:
                resp = self.session.request(
                    method, self.base + path, params=params, json=body, headers=headers, auth=auth, timeout=self.timeout
                )
            except requests.Timeout:
                raise TransientUpstreamError(f"ServiceNow {method} {path} timed out after {self.timeout:g}s") from None
            except requests.RequestException as exc:
                raise TransientUpstreamError(f"ServiceNow unreachable ({type(exc).__name__})") from None
            if resp.status_code == 401 and self.uses_oauth and attempt == 1:
                with self._lock:  # the cached token may have been revoked: get a new one once
                    self._token = None
                continue
            if resp.status_code in (401, 403):
                raise self._auth_error(resp.status_code, f"{method} {path}")
            self._raise_for_status(resp, f"{method} {path}")
            try:
                doc = resp.json()
            except ValueError:
                raise UpstreamError(f"ServiceNow {method} {path} answered {resp.status_code} without JSON") from None
            return doc if isinstance(doc, dict) else {}
        raise UpstreamError("unreachable")  # pragma: no cover - the loop returns or raises

    @staticmethod
    def _raise_for_status(resp: requests.Response, what: str) -> None:
        status = resp.status_code
        if 200 <= status < 300:
            return
        if status == 429 or status == 408 or status >= 500:
            raise TransientUpstreamError(
                f"ServiceNow {what} answered {status}", retry_after=retry_after_from(resp.headers)
            )
        message = ""
        try:
            message = str(resp.json().get("error", {}).get("message", ""))[:200]
        except (ValueError, AttributeError):
            pass
        raise UpstreamError(f"ServiceNow {what} answered {status}: {message or 'no error message'}")

    # -- incidents --

    def find_active(self, correlation_id: str) -> dict[str, Any] | None:
        """The active incident with this correlation id (sys_id, number, state), or None."""
        doc = self._request("GET", INCIDENT_PATH, params=active_incident_query(correlation_id))
        rows = doc.get("result") or []
        for row in rows:
            # guard against a query the instance ignored: only an exact correlation id counts
            if isinstance(row, dict) and row.get("correlation_id", correlation_id) == correlation_id:
                return row
        return None

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Create an incident; after a timeout, re-query by correlation id instead of posting again."""
        try:
            doc = self._request("POST", INCIDENT_PATH, params={"sysparm_fields": RETURN_FIELDS}, body=fields)
        except TransientUpstreamError as err:
            if "timed out" not in err.detail:
                raise
            found = self.find_active(str(fields["correlation_id"]))
            if found is not None:
                log.info("incident found after a timed-out create", extra={"number": found.get("number")})
                return found
            raise TransientUpstreamError(
                "ServiceNow create timed out and no incident exists yet; will re-query before retrying"
            ) from None
        return dict(doc.get("result") or {})

    def update(self, sys_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """PATCH an incident (work_notes append to the journal; state/close fields resolve it)."""
        doc = self._request("PATCH", f"{INCIDENT_PATH}/{sys_id}", params={"sysparm_fields": RETURN_FIELDS}, body=fields)
        return dict(doc.get("result") or {})
