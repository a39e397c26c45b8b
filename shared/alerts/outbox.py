"""The local outbox: when Teams or ServiceNow is not configured, each delivery becomes one JSON file.

The file holds exactly the JSON that would have been posted; its name says the channel, the
action and a hash of the dedupe key (`teams-open-<key hash>-<fingerprint>.json`), so writing the
same delivery twice overwrites one file instead of adding a second. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


class Outbox:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def write(self, channel: str, action: str, dedupe_key: str, fingerprint: str, payload: dict[str, Any]) -> Path:
        """Write one delivery (atomically, idempotently); returns the file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{channel}-{action}-{key_hash(dedupe_key)}-{fingerprint[:8]}.json"
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
