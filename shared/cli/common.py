"""What every CLI command group shares."""

from __future__ import annotations

from typing import Any


def cli_runtime() -> Any:
    """Settings (strict: a bad one stops the command with its name), logging and the process runtime."""
    from shared.observability import configure
    from shared.runtime import Runtime, set_runtime
    from shared.settings import load_settings

    settings = load_settings()
    configure(settings)
    runtime = Runtime(settings)
    set_runtime(runtime)
    return runtime
