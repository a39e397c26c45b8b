"""The composition root: settings, logging and adapters, built once per process.

Function modules call `get_runtime()` and hand its adapters to the pure logic. Tests build their
own `Runtime(settings)` with the services their fixtures started.
"""

from __future__ import annotations

import threading
from functools import cached_property

from shared.adapters.storage import StateStore
from shared.adapters.warehouse import Warehouse
from shared.observability import configure
from shared.settings import Settings, get_settings


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._migrated = False
        self._lock = threading.Lock()

    @cached_property
    def storage(self) -> StateStore:
        return StateStore.from_settings(self.settings)

    @cached_property
    def warehouse_unmigrated(self) -> Warehouse:
        return Warehouse(self.settings)

    @property
    def warehouse(self) -> Warehouse:
        """The warehouse, with its schema migrations applied once per process."""
        wh = self.warehouse_unmigrated
        if not self._migrated:
            with self._lock:
                if not self._migrated:
                    wh.migrate()
                    self._migrated = True
        return wh


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process-wide runtime; validates settings (SettingsError names what is wrong) and sets up logging."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            settings = get_settings()
            configure(settings)
            _runtime = Runtime(settings)
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (tests, the local host, the CLI) or forget it (None)."""
    global _runtime
    with _runtime_lock:
        _runtime = runtime
