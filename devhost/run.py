"""`make run`: Azurite and the local Functions host in the foreground; Ctrl-C stops both."""

from __future__ import annotations

import sys
from pathlib import Path

from devhost.azurite import AzuriteError, start_azurite
from shared.cli.__main__ import main as cli_main
from shared.errors import SettingsError
from shared.settings import load_settings


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as err:
        print(f"error: {err.detail}", file=sys.stderr)
        return 2
    azurite = None
    uses_local_storage = settings.azure_web_jobs_storage.replace(" ", "").lower() == "usedevelopmentstorage=true"
    if uses_local_storage and not settings.storage_identity_based():
        try:
            azurite = start_azurite(Path(settings.state_dir) / "azurite")
        except AzuriteError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        owner = "started" if azurite.process else "already running"
        print(f"Azurite {owner} on 127.0.0.1:10000-10002 (data in {settings.state_dir}/azurite)", flush=True)
    try:
        return cli_main(["serve"])
    finally:
        if azurite is not None:
            azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
