"""Operational state in Azure Storage: tables, queues and blobs, the same code in Azure and on Azurite.

`StateStore.from_settings()` connects with the `AzureWebJobsStorage` connection string (Azurite
locally) or with the identity-based settings `AzureWebJobsStorage__*` the Functions runtime uses
(`shared.adapters.storage_connection`), with the same timeouts either way. Failures are wrapped in `StorageError`.

Queue messages are base64 text, the Functions host's default `messageEncoding`, so a message sent
here is read by a real queue trigger and by the local host alike.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceResponseError,
)
from azure.data.tables import TableServiceClient, UpdateMode
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import (
    BinaryBase64DecodePolicy,
    BinaryBase64EncodePolicy,
    QueueServiceClient,
)

from shared.adapters.http import PooledSession, pooled_session, sdk_transport
from shared.adapters.storage_connection import StorageConnection, resolve_storage_connection
from shared.adapters.transport import storage_transport
from shared.errors import BatchRejected, ConflictError, StorageError
from shared.settings import Settings

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(
    host: str = "127.0.0.1", blob: int = 10000, queue: int = 10001, table: int = 10002
) -> str:
    """The connection string of an Azurite instance on the given ports."""
    base = f"http://{host}"
    return ";".join(
        [
            "DefaultEndpointsProtocol=http",
            f"AccountName={AZURITE_ACCOUNT}",
            "AccountKey=" + AZURITE_KEY,
            f"BlobEndpoint={base}:{blob}/{AZURITE_ACCOUNT}",
            f"QueueEndpoint={base}:{queue}/{AZURITE_ACCOUNT}",
            f"TableEndpoint={base}:{table}/{AZURITE_ACCOUNT}",
        ]
    )


def _resolve_connection_string(value: str) -> str:
    if value.strip().lower().replace(" ", "") == "usedevelopmentstorage=true":
        return azurite_connection_string()
    return value


def identity_credential(conn: StorageConnection) -> Any:
    """The credential an identity-based connection names: the managed identity (user-assigned when
    `__clientId` is set) or, without `__credential`, the default chain (a developer sign-in locally)."""
    if conn.credential == "managedidentity":
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=conn.client_id or None)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=conn.client_id or None)


# fail within seconds when storage is unreachable instead of the SDK's minute of retries
_CLIENT_OPTIONS: dict[str, Any] = {
    "connection_timeout": 5,
    "read_timeout": 30,
    "retry_total": 2,
    "retry_backoff_factor": 0.5,
}


def _client_options(session: PooledSession, *, lean: bool = False) -> dict[str, Any]:
    """The options of every storage client: timeouts, a short retry, and the process's pooled session
    (no per-request environment/.netrc lookups, connections reused across clients and threads).
    `lean`: the table and queue clients' `http.client` transport (`shared/adapters/transport.py`)."""
    timeouts = {
        "connection_timeout": _CLIENT_OPTIONS["connection_timeout"],
        "read_timeout": _CLIENT_OPTIONS["read_timeout"],
    }
    transport = storage_transport(session, **timeouts) if lean else sdk_transport(session, **timeouts)
    return {**_CLIENT_OPTIONS, "transport": transport}


@dataclass(frozen=True)
class QueuedMessage:
    id: str
    pop_receipt: str
    dequeue_count: int
    body: bytes
    inserted_on: Any = None

    def text(self) -> str:
        return self.body.decode("utf-8")


class StateStore:
    """Tables, queues and blobs of the app's storage account."""

    def __init__(self, tables: TableServiceClient, queues: QueueServiceClient, blobs: BlobServiceClient) -> None:
        self._tables = tables
        self._queues = queues
        self._blobs = blobs
        self._clients: dict[str, Any] = {}  # table/queue/container clients, built once per name
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> StateStore:
        conn = resolve_storage_connection(
            "AzureWebJobsStorage",
            settings.connection_values("AzureWebJobsStorage"),
            endpoint_suffix=settings.storage_endpoint_suffix,
        )
        if conn.identity_based:
            return cls.from_endpoints(
                conn.endpoint("table"),
                conn.endpoint("queue"),
                conn.endpoint("blob"),
                credential=identity_credential(conn),
            )
        conn_string = conn.connection_string
        if conn_string.replace(" ", "").lower() == "usedevelopmentstorage=true":  # AZURITE_PORTS moves the emulator
            conn_string = azurite_connection_string("127.0.0.1", *(int(p) for p in settings.azurite_ports))
        return cls.from_connection_string(conn_string)

    @classmethod
    def from_connection_string(cls, conn: str) -> StateStore:
        conn = _resolve_connection_string(conn)
        session = pooled_session()
        try:
            return cls(
                TableServiceClient.from_connection_string(conn, **_client_options(session, lean=True)),
                QueueServiceClient.from_connection_string(conn, **_client_options(session, lean=True)),
                BlobServiceClient.from_connection_string(conn, **_client_options(session)),
            )
        except (ValueError, AzureError) as exc:
            raise StorageError("AzureWebJobsStorage is not a valid storage connection string") from exc

    @classmethod
    def from_endpoints(cls, table_url: str, queue_url: str, blob_url: str, *, credential: Any) -> StateStore:
        """Clients for an account reached by URL with a token credential (identity-based connections)."""
        session = pooled_session()
        return cls(
            TableServiceClient(table_url, credential=credential, **_client_options(session, lean=True)),
            QueueServiceClient(queue_url, credential=credential, **_client_options(session, lean=True)),
            BlobServiceClient(blob_url, credential=credential, **_client_options(session)),
        )

    # -- tables --

    def _table(self, name: str) -> Any:
        key = "t:" + name
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    try:
                        self._tables.create_table_if_not_exists(name)
                    except AzureError as exc:
                        raise StorageError(f"cannot create table {name}: {_short(exc)}") from exc
                    client = self._clients[key] = self._tables.get_table_client(name)
        return client

    def insert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> bool:
        """Conditional insert: True if created, False if the key already existed."""
        return self.insert_etag(table, partition, row, fields) is not None

    def insert_etag(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> str | None:
        """Conditional insert: the new entity's etag (to write it again without a read), None if it existed."""
        entity = {"PartitionKey": partition, "RowKey": row, **fields}
        try:
            answer = _once_more_on_reset(lambda: self._table(table).create_entity(entity))
        except ResourceExistsError:
            return None
        except AzureError as exc:
            raise StorageError(f"insert into {table} failed: {_short(exc)}") from exc
        return str((answer or {}).get("etag") or "") if isinstance(answer, dict) else ""

    def get(self, table: str, partition: str, row: str) -> dict[str, Any] | None:
        """The entity with `_etag` in it, or None."""
        try:
            entity = self._table(table).get_entity(partition, row)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StorageError(f"read from {table} failed: {_short(exc)}") from exc
        out = dict(entity)
        out["_etag"] = entity.metadata.get("etag")
        return out

    def upsert(self, table: str, partition: str, row: str, fields: dict[str, Any]) -> None:
        entity = {"PartitionKey": partition, "RowKey": row, **fields}
        try:
            self._table(table).upsert_entity(entity, mode=UpdateMode.REPLACE)
        except AzureError as exc:
            raise StorageError(f"write to {table} failed: {_short(exc)}") from exc

    def replace_if_unchanged(self, table: str, entity: dict[str, Any]) -> str | None:
        """Optimistic update of an entity read with `get()`; ConflictError if someone wrote it since.
        Returns the new etag (so a caller may write again without reading)."""
        from azure.core import MatchConditions

        body = {k: v for k, v in entity.items() if k != "_etag"}
        try:
            answer = self._table(table).update_entity(
                body, mode=UpdateMode.REPLACE, etag=entity["_etag"], match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise ConflictError(f"{table}/{body.get('PartitionKey')}/{body.get('RowKey')} changed meanwhile") from exc
        except AzureError as exc:
            raise StorageError(f"write to {table} failed: {_short(exc)}") from exc
        etag = (answer or {}).get("etag") if isinstance(answer, dict) else None
        return str(etag) if etag else None

    def delete(self, table: str, partition: str, row: str, *, etag: str | None = None) -> None:
        """Delete an entity (gone already is fine). With `etag`, only if unchanged since it was read:
        ConflictError when someone wrote it meanwhile."""
        from azure.core import MatchConditions

        try:
            if etag:
                self._table(table).delete_entity(
                    partition, row, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            else:
                self._table(table).delete_entity(partition, row)
        except ResourceNotFoundError:
            return
        except ResourceModifiedError as exc:
            raise ConflictError(f"{table}/{partition}/{row} changed meanwhile") from exc
        except AzureError as exc:
            raise StorageError(f"delete from {table} failed: {_short(exc)}") from exc

    def transact(self, table: str, operations: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """One entity-group transaction (one round trip, all or nothing) over entities of ONE partition:
        operations are ("create" | "upsert" | "update" | "delete", entity[, {"mode": "replace", "etag": e}]),
        at most 100; an `etag` makes the operation conditional. Returns each operation's response
        metadata (with its new `etag`). BatchRejected (a ConflictError) names the index of the
        operation that failed, e.g. a create of an existing key or a stale etag."""
        from azure.core import MatchConditions
        from azure.data.tables import TableTransactionError

        if not operations:
            return []
        if len(operations) == 1:
            single = self._single(table, operations[0])
            if single is not None:
                return [single]
        ops: list[Any] = []
        for op in operations:
            if len(op) > 2 and op[2].get("etag"):
                op = (op[0], op[1], {**op[2], "match_condition": MatchConditions.IfNotModified})
            ops.append(op)
        try:
            return [dict(m) for m in _once_more_on_reset(lambda: _submit_in_turn(self._table(table), ops))]
        except TableTransactionError as exc:
            raise BatchRejected(f"transaction on {table} refused: {_short(exc)}", getattr(exc, "index", -1)) from exc
        except AzureError as exc:
            raise StorageError(f"transaction on {table} failed: {_short(exc)}") from exc

    def _single(self, table: str, op: tuple[Any, ...]) -> dict[str, Any] | None:
        """A one-operation transaction (create, update, upsert) as the plain operation: the same round
        trip and answers (its `etag`; BatchRejected with index 0), without azure-core's multipart
        request, which builds a thread pool per batch to prepare its parts. None: not one of those."""
        from azure.core import MatchConditions

        kind, entity = op[0], dict(op[1])
        opts = dict(op[2]) if len(op) > 2 else {}
        mode = UpdateMode(getattr(opts.get("mode"), "value", opts.get("mode") or "merge"))
        if kind not in ("create", "update", "upsert") or set(opts) - {"mode", "etag"}:
            return None
        client = self._table(table)
        try:
            if kind == "create":
                answer = _once_more_on_reset(lambda: client.create_entity(entity))
            elif kind == "upsert":
                answer = _once_more_on_reset(lambda: client.upsert_entity(entity, mode=mode))
            elif opts.get("etag"):
                answer = _once_more_on_reset(
                    lambda: client.update_entity(
                        entity, mode=mode, etag=opts["etag"], match_condition=MatchConditions.IfNotModified
                    )
                )
            else:
                answer = _once_more_on_reset(lambda: client.update_entity(entity, mode=mode))
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise BatchRejected(f"transaction on {table} refused: {_short(exc)}", 0) from exc
        except AzureError as exc:
            raise StorageError(f"transaction on {table} failed: {_short(exc)}") from exc
        return dict(answer or {})

    def query(self, table: str, filter: str | None = None, **params: Any) -> Iterator[dict[str, Any]]:
        """Entities matching an OData filter (`PartitionKey eq @pk`, parameters as keywords)."""
        for entity in self._entities(table, filter, params):
            yield dict(entity)

    def query_etags(self, table: str, filter: str, **params: Any) -> Iterator[dict[str, Any]]:
        """`query`, each entity with its `_etag` (for a conditional write or delete after the read)."""
        for entity in self._entities(table, filter, params):
            yield {**entity, "_etag": entity.metadata.get("etag")}

    def _entities(self, table: str, filter: str | None, params: dict[str, Any]) -> Iterator[Any]:
        try:
            client = self._table(table)
            yield from client.query_entities(filter, parameters=params) if filter else client.list_entities()
        except AzureError as exc:
            raise StorageError(f"query of {table} failed: {_short(exc)}") from exc

    # -- queues --

    def _queue(self, name: str) -> Any:
        key = "q:" + name
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = self._queues.get_queue_client(
                        name,
                        message_encode_policy=BinaryBase64EncodePolicy(),
                        message_decode_policy=BinaryBase64DecodePolicy(),
                    )
                    try:
                        client.create_queue()
                    except ResourceExistsError:
                        pass
                    except AzureError as exc:
                        raise StorageError(f"cannot create queue {name}: {_short(exc)}") from exc
                    self._clients[key] = client
        return client

    def send(self, queue: str, message: dict[str, Any] | str | bytes, *, visibility_timeout: int | None = None) -> str:
        """Enqueue a message (dicts as JSON); returns the message id."""
        if isinstance(message, dict):
            body = json.dumps(message, separators=(",", ":"), default=str).encode()
        elif isinstance(message, str):
            body = message.encode()
        else:
            body = message
        if len(body) > 48 * 1024:
            raise StorageError(f"message for queue {queue} is {len(body)} bytes; the limit is 48 KiB before base64")
        try:
            sent = self._queue(queue).send_message(body, visibility_timeout=visibility_timeout)
        except AzureError as exc:
            raise StorageError(f"enqueue to {queue} failed: {_short(exc)}") from exc
        return str(sent.id)

    def receive(self, queue: str, *, max_messages: int = 16, visibility_timeout: int = 30) -> list[QueuedMessage]:
        try:
            msgs = self._queue(queue).receive_messages(
                messages_per_page=max_messages, max_messages=max_messages, visibility_timeout=visibility_timeout
            )
            return [QueuedMessage(m.id, m.pop_receipt, m.dequeue_count, bytes(m.content), m.inserted_on) for m in msgs]
        except AzureError as exc:
            raise StorageError(f"receive from {queue} failed: {_short(exc)}") from exc

    def ack(self, queue: str, message: QueuedMessage) -> None:
        try:
            self._queue(queue).delete_message(message.id, message.pop_receipt)
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise StorageError(f"delete from {queue} failed: {_short(exc)}") from exc

    def release(self, queue: str, message: QueuedMessage, *, delay_seconds: int) -> None:
        """Make a received message visible again after a delay (a retry with backoff)."""
        try:
            self._queue(queue).update_message(message.id, message.pop_receipt, visibility_timeout=delay_seconds)
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise StorageError(f"release on {queue} failed: {_short(exc)}") from exc

    def peek(self, queue: str, max_messages: int = 32) -> list[QueuedMessage]:
        try:
            msgs = self._queue(queue).peek_messages(max_messages=max_messages)
            return [QueuedMessage(m.id, "", m.dequeue_count, bytes(m.content), m.inserted_on) for m in msgs]
        except AzureError as exc:
            raise StorageError(f"peek of {queue} failed: {_short(exc)}") from exc

    def queue_length(self, queue: str) -> int:
        try:
            return int(self._queue(queue).get_queue_properties().approximate_message_count or 0)
        except AzureError as exc:
            raise StorageError(f"properties of {queue} failed: {_short(exc)}") from exc

    # -- blobs --

    def _container(self, name: str) -> Any:
        key = "c:" + name
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = self._blobs.get_container_client(name)
                    try:
                        client.create_container()
                    except ResourceExistsError:
                        pass
                    except AzureError as exc:
                        raise StorageError(f"cannot create container {name}: {_short(exc)}") from exc
                    self._clients[key] = client
        return client

    def put_blob(self, container: str, name: str, data: bytes, *, overwrite: bool = True) -> None:
        try:
            self._container(container).upload_blob(name, data, overwrite=overwrite)
        except ResourceExistsError as exc:
            raise ConflictError(f"blob {container}/{name} exists") from exc
        except AzureError as exc:
            raise StorageError(f"upload of {container}/{name} failed: {_short(exc)}") from exc

    def get_blob(self, container: str, name: str) -> bytes | None:
        try:
            return bytes(self._container(container).download_blob(name).readall())
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StorageError(f"download of {container}/{name} failed: {_short(exc)}") from exc

    def list_blobs(self, container: str, prefix: str | None = None) -> list[str]:
        try:
            return [b.name for b in self._container(container).list_blobs(name_starts_with=prefix)]
        except AzureError as exc:
            raise StorageError(f"listing {container} failed: {_short(exc)}") from exc

    def ping(self) -> str:
        try:
            next(iter(self._tables.list_tables(results_per_page=1).by_page()), None)
        except AzureError as exc:
            raise StorageError(f"storage unreachable: {_short(exc)}") from exc
        return "ok"


def _submit_in_turn(client: Any, operations: list[Any]) -> list[Any]:
    """`TableClient.submit_transaction` without its thread pools: the same request, sent the same way.

    azure-core prepares the parts of a multipart request and parses those of its answer on new
    `ThreadPoolExecutor`s, four per transaction; in a worker whose threads share the GIL, starting
    those threads took several times the round trip itself (py-spy: 16% of an alert worker's time for
    0.4 transactions per alert). Here the same policies run on the calling thread. The SDK's own
    request builder, error decoding and part metadata are used as they are (azure-data-tables is
    pinned); without those internals, the SDK's method is used."""
    try:
        from azure.core.pipeline import PipelineContext, PipelineRequest
        from azure.core.rest import HttpRequest
        from azure.data.tables._base_client import extract_batch_part_metadata
        from azure.data.tables._error import (
            RequestTooLargeError,
            TableTransactionError,
            _decode_error,
            _validate_tablename_error,
        )
        from azure.data.tables._policies import StorageHeadersPolicy
        from azure.data.tables._table_batch import TableBatchOperations
    except ImportError:  # pragma: no cover - another SDK version: its own way
        return list(client.submit_transaction(operations))

    def prepare(request: Any) -> None:  # what Pipeline._prepare_multipart_mixed_request does, in turn
        info = request.multipart_mixed_info
        if not info:
            return
        parts, policies, _, options = info
        for part in parts:
            prepare(part)
            pipeline_request = PipelineRequest(part, PipelineContext(None, **options))
            for policy in policies:
                policy.on_request(pipeline_request)

    endpoint = f"{client.scheme}://{client._primary_hostname}"
    batch = TableBatchOperations(
        config=client._client._config,
        endpoint=endpoint,
        table_name=client.table_name,
        is_cosmos_endpoint=client._cosmos_endpoint,
    )
    for operation in operations:
        batch.add_operation(operation)
    policies = [StorageHeadersPolicy()]
    changeset = HttpRequest("POST", "")
    changeset.set_multipart_mixed(*batch.requests, policies=policies, boundary=f"changeset_{uuid.uuid4()}")
    request: Any = HttpRequest(
        "POST",
        f"{endpoint}/$batch",
        headers={
            "x-ms-version": client.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
    )
    request.set_multipart_mixed(changeset, policies=policies, enforce_https=False, boundary=f"batch_{uuid.uuid4()}")
    prepare(request)
    request.prepare_multipart_body()
    info = request.multipart_mixed_info
    request.multipart_mixed_info = None  # prepared: the pipeline would prepare it again, on new threads
    response = client._client.send_request(request, stream=True)
    response.request.multipart_mixed_info = info  # what the answer's parts are matched with
    if response.status_code == 413:
        raise _decode_error(
            response, error_message="The transaction request was too large", error_type=RequestTooLargeError
        )
    if response.status_code != 202:
        decoded = _decode_error(response)
        _validate_tablename_error(decoded, client.table_name)
        raise decoded
    answers = list(response._get_raw_parts())  # the parts, without the policies' no-op on_response threads
    failed = [p for p in answers if not 200 <= p.status_code < 300]
    if failed:
        if failed[0].status_code == 413:
            raise _decode_error(
                response, error_message="The transaction request was too large", error_type=RequestTooLargeError
            )
        raise _decode_error(response=failed[0], error_type=TableTransactionError)
    return [extract_batch_part_metadata(p) for p in answers]


def _once_more_on_reset(call: Callable[[], Any]) -> Any:
    """Run a write (insert, transaction, update) and repeat it once when the connection was reset under it.

    The SDK does not retry a POST whose answer was lost (it may have been applied). Ours are
    conditional or idempotent: a repeat of an applied insert answers 409 and of an applied etag-checked
    update 412, which callers already handle (an idempotency claim recognises its own holder token; a
    storm transaction its own row; a storm counter is read again); an upsert writes the same. A server
    closing an idle pooled connection just as it is reused is the usual cause."""
    try:
        return call()
    except ServiceResponseError as exc:
        if "reset" not in str(exc).lower() and "aborted" not in str(exc).lower():
            raise
        return call()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
