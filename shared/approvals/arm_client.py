"""The ARM client the cost actions use: the project's throttling-aware `shared.adapters.arm.Arm`."""

from __future__ import annotations

from shared.approvals.actions import ArmClient
from shared.settings import Settings


def arm_for(settings: Settings) -> ArmClient:
    """`Arm.from_settings(settings)`: 429 Retry-After, backoff with jitter, per-subscription write budget;
    a loopback ARM_ENDPOINT uses the static dev credential."""
    from shared.adapters.arm import Arm

    arm: ArmClient = Arm.from_settings(settings)
    return arm
