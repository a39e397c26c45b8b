"""How to reach a storage account, resolved the way the Functions runtime resolves a connection.

A connection named `<conn>` (e.g. `AzureWebJobsStorage`) is either a connection string in the
setting `<conn>` or identity-based settings under `<conn>__*`:

- `<conn>__blobServiceUri` / `__queueServiceUri` / `__tableServiceUri`: explicit endpoints;
- `<conn>__accountName`: endpoints `https://<name>.<service>.<suffix>` for the services without
  an explicit URI (the suffix is `AZURE_STORAGE_ENDPOINT_SUFFIX`, `core.windows.net` by default);
- `<conn>__credential` = `managedidentity` (+ `<conn>__clientId` for a user-assigned identity);
  without it the default credential chain (managed identity in Azure, a developer sign-in locally).

Identity-based settings win over a connection string, as in the runtime. Pure: a mapping of
setting names to strings in, a `StorageConnection` out; the adapters build the clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.errors import SettingsError

SERVICES = ("blob", "queue", "table")
DEFAULT_ENDPOINT_SUFFIX = "core.windows.net"


@dataclass(frozen=True)
class StorageConnection:
    """Either `connection_string`, or per-service `endpoints` with an identity credential."""

    name: str
    connection_string: str = ""
    endpoints: tuple[tuple[str, str], ...] = ()
    credential: str = ""  # "managedidentity" or "" (the default credential chain)
    client_id: str = ""

    @property
    def identity_based(self) -> bool:
        return not self.connection_string

    def endpoint(self, service: str) -> str:
        """The endpoint of `blob`, `queue` or `table`; SettingsError naming the setting when there is none."""
        for svc, url in self.endpoints:
            if svc == service:
                return url
        raise SettingsError(
            f"{self.name}: no {service} endpoint: set {self.name}__accountName or {self.name}__{service}ServiceUri"
        )

    def describe(self) -> str:
        """Where and how, without secrets (for health and logs)."""
        if not self.identity_based:
            return "connection string"
        who = (
            "user-assigned managed identity"
            if self.client_id
            else ("managed identity" if self.credential == "managedidentity" else "default Azure credential")
        )
        hosts = ", ".join(url for _, url in self.endpoints)
        return f"{hosts} with {who}"


def resolve_storage_connection(
    name: str, values: Mapping[str, str], *, endpoint_suffix: str = DEFAULT_ENDPOINT_SUFFIX
) -> StorageConnection:
    """Resolve connection `name` from `values` (setting name -> raw string; missing = unset).

    Raises SettingsError naming the setting when neither a connection string nor identity-based
    settings are there, or when `__credential` is something the runtime does not know."""

    def get(key: str) -> str:
        return (values.get(key) or "").strip()

    account = get(f"{name}__accountName")
    explicit = {svc: get(f"{name}__{svc}ServiceUri") for svc in SERVICES}
    if account or any(explicit.values()):
        credential = get(f"{name}__credential").lower()
        if credential not in ("", "managedidentity"):
            raise SettingsError(f"{name}__credential: expected managedidentity or empty; got {credential!r}")
        suffix = (endpoint_suffix or DEFAULT_ENDPOINT_SUFFIX).strip().strip(".")
        endpoints = []
        for svc in SERVICES:
            url = explicit[svc] or (f"https://{account}.{svc}.{suffix}" if account else "")
            if url:
                endpoints.append((svc, url.rstrip("/")))
        return StorageConnection(
            name, endpoints=tuple(endpoints), credential=credential, client_id=get(f"{name}__clientId")
        )
    conn = get(name)
    if not conn:
        raise SettingsError(f"{name}: set a connection string or {name}__accountName (identity-based)")
    return StorageConnection(name, connection_string=conn)
