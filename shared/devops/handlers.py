"""Where capabilities plug their Azure DevOps service-hook handlers in: one import line each.

Called on the first dispatch, not at app import, so functions that never see a hook never load them.
"""

from __future__ import annotations


def load_handlers() -> None:
    """Import every module that registers handlers with `shared.devops.hooks.register` (idempotent)."""
    # e.g. `from shared.demands import ado_events  # noqa: F401  (workitem.*, build/release completed)`
    from shared.catalog import refresh  # noqa: F401  (git.push -> Backstage refresh)
    from shared.demands import ado_events  # noqa: F401  (workitem.updated, build/release completed)
    from shared.dora import ado_events as dora_events  # noqa: F401  (pipeline run/stage, release deployment completed)
