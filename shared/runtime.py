"""The composition root: settings, logging and adapters, built once per process.

Function modules call `get_runtime()` and hand its adapters to the pure logic. Tests build their
own `Runtime(settings)` with the services their fixtures started.

Everything a process needs is built here, once, on first use (nothing at import time): the
storage clients (one pooled session, clients cached per table/queue/container), one pooled
HTTP session for the outside peers (Teams, ServiceNow, Logic Apps), one `Arm` whose
per-subscription write budget every caller shares (policy remediation and approved cost
actions alike), the idempotency records, alert delivery and the policy worker. No module keeps
its own cache of these.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

from shared.adapters.storage import StateStore
from shared.adapters.warehouse import Warehouse
from shared.idempotency import Idempotency
from shared.observability import configure
from shared.settings import Settings, get_settings

if TYPE_CHECKING:
    from shared.adapters.arm import Arm
    from shared.adapters.http import PooledSession
    from shared.alerts.delivery import AlertDelivery
    from shared.policy.worker import PolicyWorker


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._migrated = False
        self._lock = threading.Lock()

    @cached_property
    def storage(self) -> StateStore:
        return StateStore.from_settings(self.settings)

    @cached_property
    def http(self) -> PooledSession:
        """The pooled session for outbound HTTP peers (Teams, ServiceNow, Logic App callbacks)."""
        from shared.adapters.http import pooled_session

        return pooled_session()

    @cached_property
    def idempotency(self) -> Idempotency:
        return Idempotency(self.storage)

    @cached_property
    def arm(self) -> Arm:
        """The process's one ARM client: its write budget is shared by remediation and cost actions."""
        from shared.adapters.arm import Arm

        return Arm.from_settings(self.settings)

    @cached_property
    def alert_delivery(self) -> AlertDelivery:
        """Alert delivery with its Teams/ServiceNow clients (their rate windows live as long as the process)."""
        from shared.alerts.delivery import AlertDelivery

        return AlertDelivery.from_settings(self.settings, self.storage, session=self.http, idempotency=self.idempotency)

    @cached_property
    def policy_worker(self) -> PolicyWorker:
        """The policy worker (its effect and owner caches outlive an invocation)."""
        from shared.policy.worker import PolicyWorker

        return PolicyWorker(self.storage, self.settings, self.arm)

    def use(self, **adapters: Any) -> Runtime:
        """Replace adapters before first use (dev tools and tests: `runtime.use(arm=FakeArm(...))`)."""
        for name, value in adapters.items():
            if not isinstance(getattr(type(self), name, None), cached_property):
                raise AttributeError(f"Runtime has no adapter {name!r}")
            self.__dict__[name] = value
        return self

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
