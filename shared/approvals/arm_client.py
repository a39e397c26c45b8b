"""The ARM client the cost actions use: the process's one `Arm`, from the runtime.

Approved cost actions and policy remediation share it, and so share its per-subscription ARM
write budget (429 Retry-After, backoff with jitter); a loopback ARM_ENDPOINT uses the static dev
credential."""

from __future__ import annotations

from typing import Any

from shared.approvals.actions import ArmClient


def arm_for(runtime: Any) -> ArmClient:
    """`runtime.arm`: built once per process by the composition root (`shared.runtime.Runtime`)."""
    arm: ArmClient = runtime.arm
    return arm
