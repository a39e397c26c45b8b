"""The outbox: when Teams or ServiceNow is not configured, each delivery becomes one JSON document.

The document holds exactly the JSON that would have been posted; its name says the channel, the
action and a hash of the dedupe key (`teams-open-<key hash>-<fingerprint>.json`), so writing the
same delivery twice overwrites one document instead of adding a second. An outbox delivery is
reported as `outbox`, never as `delivered`.

Where it goes depends on where the app runs (`outbox_for`):
- locally (local host, CLI, tests): files in `OUTBOX_DIR`, written atomically;
- in Azure the package is read-only and instance disks are ephemeral, so never a local folder:
  blobs in the container `OUTBOX_CONTAINER` of the app's storage account, which the operator can
  read; with `OUTBOX_CONTAINER=none`, no outbox: the channel fails on every alert as not configured.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from shared.errors import ForbiddenActionError
from shared.settings import Settings


def key_hash(dedupe_key: str) -> str:
    return hashlib.sha256(dedupe_key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class OutboxEntry:
    path: Path
    channel: str
    action: str
    key_hash: str
    written_at: float

    def payload(self) -> Any:
        return json.loads(self.path.read_text(encoding="utf-8"))


def entry_name(channel: str, action: str, dedupe_key: str, fingerprint: str) -> str:
    return f"{channel}-{action}-{key_hash(dedupe_key)}-{fingerprint[:8]}.json"


class Outbox:
    """Files in a local folder (never in Azure)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def write(self, channel: str, action: str, dedupe_key: str, fingerprint: str, payload: dict[str, Any]) -> Path:
        """Write one delivery (atomically, idempotently); returns the file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / entry_name(channel, action, dedupe_key, fingerprint)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, ensure_ascii=False)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600: people read the outbox, not only this process
        os.replace(tmp, path)
        return path

    def entries(self) -> list[OutboxEntry]:
        """Every delivery in the outbox, oldest first."""
        if not self.folder.is_dir():
            return []
        out = []
        for path in self.folder.glob("*.json"):
            if path.name.startswith("."):
                continue
            parts = path.stem.split("-")
            if len(parts) < 4:
                continue
            out.append(OutboxEntry(path, parts[0], parts[1], parts[2], path.stat().st_mtime))
        return sorted(out, key=lambda e: (e.written_at, e.path.name))


class BlobWriter(Protocol):
    def put_blob(self, container: str, name: str, data: bytes, *, overwrite: bool = True) -> None: ...


class BlobOutbox:
    """Blobs in a container of the app's storage account: the outbox in Azure."""

    def __init__(self, store: BlobWriter, container: str) -> None:
        self.store = store
        self.container = container

    def write(
        self, channel: str, action: str, dedupe_key: str, fingerprint: str, payload: dict[str, Any]
    ) -> PurePosixPath:
        """Upload one delivery (overwrites the same delivery); returns `<container>/<blob>`."""
        name = entry_name(channel, action, dedupe_key, fingerprint)
        data = json.dumps(payload, indent=2, ensure_ascii=False).encode("utf-8")
        self.store.put_blob(self.container, name, data, overwrite=True)
        return PurePosixPath(self.container) / name


class ChannelNotConfiguredError(ForbiddenActionError):
    """A channel has no destination and there is no outbox: the alert is not delivered on it."""

    kind = "channel-not-configured"
    title = "Alert channel not configured"


class NoOutbox:
    """In Azure with `OUTBOX_CONTAINER=none`: every write fails, naming what to configure."""

    def write(self, channel: str, action: str, dedupe_key: str, fingerprint: str, payload: dict[str, Any]) -> Path:
        what = (
            "SERVICENOW_INSTANCE_URL"
            if channel == "servicenow"
            else "TEAMS_DEFAULT_WEBHOOK_URL or a squad route in ALERT_ROUTES"
        )
        raise ChannelNotConfiguredError(
            f"{channel} is not configured ({what} is empty) and OUTBOX_CONTAINER=none: alert not delivered"
        )


def outbox_for(settings: Settings, store: Any) -> Any:
    """The outbox where this process runs: local folder, blob container (Azure) or none (Azure)."""
    if not settings.in_azure():
        return Outbox(settings.outbox_dir)
    if settings.outbox_container:
        return BlobOutbox(store, settings.outbox_container)
    return NoOutbox()


def describe_outbox(settings: Settings) -> str:
    """Where undelivered alerts of an unconfigured channel end up, in words (for health and doctor)."""
    if not settings.in_azure():
        return f"written to the local outbox {settings.outbox_dir} (not delivered; local runs only)"
    if settings.outbox_container:
        return (
            f"written to blob container {settings.outbox_container} of the app's storage account "
            "(not delivered to anyone: read them there)"
        )
    return "not delivered: every alert fails on this channel as not configured (OUTBOX_CONTAINER=none)"
