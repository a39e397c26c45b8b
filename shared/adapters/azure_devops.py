"""Azure DevOps REST (work items, pipelines, repos): one small client every capability shares.

Auth: a PAT (`AZURE_DEVOPS_PAT`, sent as basic auth with an empty user) or, when no PAT is set, an
Entra token for Azure DevOps (resource 499b84ac-1321-427f-aa17-267ca6975798) from the managed
identity; a loopback `AZURE_DEVOPS_ORG_URL` (tests, the demo) gets neither.
Errors: 429 and 5xx (with `Retry-After`), timeouts -> `TransientUpstreamError`; 401/403, and the 203
sign-in page Azure DevOps answers for a bad PAT -> `UpstreamAuthError`, logged once per process;
other 4xx -> `UpstreamError` carrying the `TFxxxxx` message Azure DevOps puts in its error body.
Each capability builds its calls on `request()` (paths relative to the organization URL).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from shared.errors import SettingsError, TransientUpstreamError, UpstreamAuthError, UpstreamError
from shared.retry import parse_retry_after
from shared.settings import Settings, is_loopback_host

log = logging.getLogger(__name__)

API_VERSION = "7.1"
ENTRA_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default"
JSON_PATCH = "application/json-patch+json"


class AzureDevOpsClient:
    _auth_reported = False  # one loud report per process, not one per event

    def __init__(
        self,
        org_url: str,
        project: str = "",
        *,
        pat: str = "",
        token_provider: Callable[[], str] | None = None,
        timeout: float = 15.0,
        session: requests.Session | None = None,
    ) -> None:
        if not org_url:
            raise SettingsError("AZURE_DEVOPS_ORG_URL is empty: set it to https://dev.azure.com/<org>")
        self.base = org_url.rstrip("/")
        self.project = project
        self.pat = pat
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.trust_env = False  # no proxy or ~/.netrc lookups on every call
        self._token_provider = token_provider
        self._lock = threading.Lock()
        self._token: tuple[str, float] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, session: requests.Session | None = None) -> AzureDevOpsClient:
        return cls(
            settings.azure_devops_org_url,
            settings.azure_devops_project,
            pat=settings.azure_devops_pat,
            session=session,
        )

    @property
    def is_local(self) -> bool:
        return is_loopback_host(urlsplit(self.base).hostname)

    def project_path(self, tail: str) -> str:
        """`/<project>/<tail>` with the project percent-encoded (names may hold spaces)."""
        if not self.project:
            raise SettingsError("AZURE_DEVOPS_PROJECT is empty: set the project the work items and pipelines live in")
        return f"/{quote(self.project, safe='')}/{tail.lstrip('/')}"

    # -- auth --

    def _auth_header(self) -> dict[str, str]:
        if self.pat:
            return {"Authorization": "Basic " + base64.b64encode(f":{self.pat}".encode()).decode()}
        if self.is_local:
            return {}
        with self._lock:
            if self._token is None or self._token[1] < time.time() + 120:
                self._token = self._fetch_token()
            return {"Authorization": f"Bearer {self._token[0]}"}

    def _fetch_token(self) -> tuple[str, float]:
        if self._token_provider is not None:
            return self._token_provider(), time.time() + 3000
        from azure.core.exceptions import ClientAuthenticationError
        from azure.identity import DefaultAzureCredential

        try:
            token = DefaultAzureCredential().get_token(ENTRA_SCOPE)
        except ClientAuthenticationError as exc:
            raise UpstreamAuthError(
                "no Entra token for Azure DevOps: set AZURE_DEVOPS_PAT, or give the app's managed identity "
                f"access to the organization ({str(exc).splitlines()[0][:200]})"
            ) from None
        return token.token, float(token.expires_on)

    # -- calls --

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """Call `<org_url><path>` with `api-version` set; the decoded JSON body (None for 204)."""
        url = self.base + path
        query = {"api-version": API_VERSION, **(params or {})}
        headers = {"Accept": "application/json", **self._auth_header()}
        if json is not None:
            headers["Content-Type"] = content_type
        try:
            resp = self.session.request(
                method, url, params=query, json=json, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.Timeout:
            raise TransientUpstreamError(f"Azure DevOps {method} {path} timed out after {self.timeout:g}s") from None
        except requests.RequestException as exc:
            raise TransientUpstreamError(f"Azure DevOps {method} {path} failed: {type(exc).__name__}") from None
        return self._answer(method, path, resp)

    def _answer(self, method: str, path: str, resp: requests.Response) -> Any:
        status = resp.status_code
        what = f"Azure DevOps {method} {path}"
        if status in (401, 403) or status == 203 or 300 <= status < 400:
            # a bad PAT gets a 203 (or a redirect) to the sign-in page instead of a 401
            detail = f"{what} answered {status}: {_tf_message(resp) or 'credentials refused'}"
            if not AzureDevOpsClient._auth_reported:
                AzureDevOpsClient._auth_reported = True
                log.error("Azure DevOps refused our credentials (check AZURE_DEVOPS_PAT or the identity): %s", detail)
            raise UpstreamAuthError(detail)
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            raise TransientUpstreamError(f"{what} answered {status}", retry_after=retry_after)
        if status >= 400:
            raise UpstreamError(f"{what} answered {status}: {_tf_message(resp) or resp.reason}")
        if status == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise UpstreamError(f"{what} answered {status} with a body that is not JSON") from None


def _tf_message(resp: requests.Response) -> str:
    """The `message` of an Azure DevOps error body (it starts with the TFxxxxx code), shortened."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"][:300]
    return ""
