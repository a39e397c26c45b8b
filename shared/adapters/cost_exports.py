"""The storage account Cost Management exports land in: read a run's manifest and data blobs.

`COST_EXPORT_STORAGE__accountName` (managed identity) or `COST_EXPORT_STORAGE` (connection string) name it;
when both are empty the exports are read from the app's own storage (`AzureWebJobsStorage`, Azurite locally).
Blob URLs come from Event Grid (`data.url`): `https://<account>.blob.core.windows.net/<container>/<blob>` or,
on Azurite, path-style `http://127.0.0.1:10000/<account>/<container>/<blob>`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import unquote, urlparse

from shared.adapters.http import pooled_session
from shared.adapters.storage import StateStore, _client_options, identity_credential
from shared.adapters.storage_connection import resolve_storage_connection
from shared.errors import BadInputError, NotFoundError
from shared.settings import Settings, is_loopback_host


@dataclass(frozen=True)
class BlobRef:
    container: str
    name: str


def parse_blob_url(url: str) -> BlobRef:
    """Container and blob name of a blob URL (virtual-host or path-style); BadInputError if it is not one."""
    parsed = urlparse(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise BadInputError(f"not a blob URL: {url!r}")
    parts = [unquote(p) for p in parsed.path.split("/") if p]
    path_style = is_loopback_host(parsed.hostname) or parsed.hostname.replace(".", "").isdigit()
    if path_style:
        parts = parts[1:]  # the first segment is the account name
    if len(parts) < 2:
        raise BadInputError(f"blob URL {url!r} names no container and blob")
    return BlobRef(parts[0], "/".join(parts[1:]))


class CostExportStorage:
    """Reads export blobs; wraps the StateStore of the export account."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    @classmethod
    def from_settings(cls, settings: Settings, app_store: StateStore) -> CostExportStorage:
        values = settings.connection_values("COST_EXPORT_STORAGE")
        if not any(
            values.get(k)
            for k in ("COST_EXPORT_STORAGE", "COST_EXPORT_STORAGE__accountName", "COST_EXPORT_STORAGE__blobServiceUri")
        ):
            return cls(app_store)
        conn = resolve_storage_connection(
            "COST_EXPORT_STORAGE", values, endpoint_suffix=settings.storage_endpoint_suffix
        )
        if conn.identity_based:
            from azure.storage.blob import BlobServiceClient

            blobs = BlobServiceClient(
                conn.endpoint("blob"), credential=identity_credential(conn), **_client_options(pooled_session())
            )
            # tables and queues of the export account are never used: reuse the app's clients
            return cls(StateStore(app_store._tables, app_store._queues, blobs))  # noqa: SLF001
        return cls(StateStore.from_connection_string(conn.connection_string))

    def read(self, container: str, name: str) -> bytes:
        data = self.store.get_blob(container, name)
        if data is None:
            raise NotFoundError(f"blob {container}/{name} does not exist (yet)")
        return data

    def opener(self, container: str, name: str) -> Callable[[], IO[bytes]]:
        """A callable opening the blob as a stream read in chunks (never the whole blob in memory)."""

        def open_blob() -> IO[bytes]:
            from azure.core.exceptions import AzureError, ResourceNotFoundError

            from shared.errors import StorageError

            client = self.store._blobs.get_blob_client(container, name)  # noqa: SLF001 - the export account's client
            try:
                download = client.download_blob(max_concurrency=1)
            except ResourceNotFoundError as exc:
                raise NotFoundError(f"blob {container}/{name} does not exist (yet)") from exc
            except AzureError as exc:
                raise StorageError(f"download of {container}/{name} failed: {exc}") from exc
            return io.BufferedReader(_ChunkStream(download.chunks()), buffer_size=1 << 20)

        return open_blob

    def list(self, container: str, prefix: str) -> list[str]:
        return self.store.list_blobs(container, prefix)

    def upload(self, container: str, name: str, data: bytes) -> None:
        self.store.put_blob(container, name, data)


class _ChunkStream(io.RawIOBase):
    """The chunks of a blob download as a readable raw stream."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not len(self._pending):
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
