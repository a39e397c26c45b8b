"""`make run`: Azurite and the local Functions host in the foreground; Ctrl-C stops both.

Failures at start are one line saying what to do (port in use, Azurite not installed or not answering).
It says when it attaches to an Azurite it did not start; AZURITE_PORTS picks other ports. With
VALUEFLOW_FAKE_ARM=true it also starts a local fake ARM and points ARM_ENDPOINT at it, so a posted
policy event runs the whole policy path locally.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from devhost.azurite import AzuriteError, port_open, start_azurite
from shared.cli.__main__ import main as cli_main
from shared.errors import SettingsError
from shared.settings import Settings, load_settings


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as err:
        print(f"error: {err.detail}", file=sys.stderr)
        return 2
    # `kill $(cat .valueflow/run.pid)` stops this run cleanly (the host, then the Azurite it started)
    pid_file = Path(settings.state_dir) / "run.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        return _run(settings)
    finally:
        pid_file.unlink(missing_ok=True)


def _run(settings: Settings) -> int:
    azurite = None
    fake_arm = None
    ports = (int(settings.azurite_ports[0]), int(settings.azurite_ports[1]), int(settings.azurite_ports[2]))
    span = f"127.0.0.1:{ports[0]},{ports[1]},{ports[2]}"
    uses_local_storage = settings.azure_web_jobs_storage.replace(" ", "").lower() == "usedevelopmentstorage=true"
    if uses_local_storage and not settings.storage_identity_based():
        answering = [p for p in ports if port_open(p)]
        if answering and len(answering) < 3:
            print(
                f"error: only port(s) {', '.join(map(str, answering))} of {span} answer: another program holds them; "
                "stop it or choose free ports, e.g. AZURITE_PORTS=20000,20001,20002 make run",
                file=sys.stderr,
            )
            return 2
        try:
            azurite = start_azurite(Path(settings.state_dir) / "azurite", ports=ports)
        except AzuriteError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if azurite.process:
            print(f"Azurite started on {span} (data in {settings.state_dir}/azurite)", flush=True)
        else:
            print(
                f"Azurite: attaching to what already answers on {span} (not started by this run, not stopped by it; "
                "AZURITE_PORTS=a,b,c starts a fresh one on other ports)",
                flush=True,
            )
    if settings.arm_dev_fake:
        from devhost.fake_arm import DEV_OWNER, dev_fake_arm

        fake_arm = dev_fake_arm()
        os.environ["ARM_ENDPOINT"] = fake_arm.url
        print(
            f"Fake ARM (VALUEFLOW_FAKE_ARM=true) on {fake_arm.url}: assignments named *audit*/*deny* escalate, "
            f"others remediate; every resource is owned by squad {DEV_OWNER!r}",
            flush=True,
        )
    try:
        return cli_main(["serve"])
    finally:
        if fake_arm is not None:
            fake_arm.stop()
        if azurite is not None:
            azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
