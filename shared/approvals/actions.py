"""Guarded cost actions: a registry of what an approved cost anomaly may trigger, and the guard rails.

Each action is one class registered by name (`@register("deallocate_vm")`), Cloud Custodian style:
it says which resource types it applies to (`resource_types`), checks a target (`validate`), says
which ARM calls it would make (`plan`) and makes them (`execute`) through the throttling-aware ARM
client. The Logic App speaks in intents (`stop`, `scale_down`, `apply_budget`, `escalate`);
`resolve_action()` maps an intent and a resource type to a registered action.

`run_action()` applies the guard rails, in this order, before anything touches Azure:
1. the action must exist and fit the resource (else `refused`);
2. the subscription must not be in ACTIONS_PROTECTED_SUBSCRIPTIONS (else `refused`);
3. REMEDIATION_MODE must be `enforce`; in `dry-run` (the default) nothing is called, not even a read,
   and the outcome lists the calls that would have been made (`dry_run`);
4. the resource (and its resource group) is read first; a tag ACTIONS_PROTECTED_TAG=true on either
   refuses the action (`refused`).
A refusal is never silent: the caller sends an escalation alert.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from shared.approvals.workflow import ActionOutcome
from shared.errors import BadInputError, NotFoundError, TransientUpstreamError, UpstreamError, ValueFlowError
from shared.resource_ids import encode_resource_path

log = logging.getLogger(__name__)

VM_API = "2024-07-01"
AKS_API = "2024-09-01"
WEB_API = "2023-12-01"
BUDGET_API = "2023-11-01"
RG_API = "2021-04-01"
BUDGET_NAME = "valueflow-cost-guard"


class ArmClient(Protocol):
    """The part of `shared.adapters.arm.Arm` the actions use."""

    def request(self, method: str, path: str, api_version: str, body: Any = None) -> Any: ...


@dataclass(frozen=True)
class ArmResult:
    status: int | None  # None: 2xx, the client does not expose which
    body: dict[str, Any]


@dataclass(frozen=True)
class PlannedCall:
    method: str
    path: str
    api_version: str
    why: str

    def as_dict(self) -> dict[str, str]:
        return {"method": self.method, "path": self.path, "apiVersion": self.api_version, "why": self.why}


@dataclass(frozen=True)
class ActionTarget:
    """What an action works on: the episode's resource and what we know of its cost."""

    resource_id: str
    expected_usd_per_day: float = 0.0
    impact_usd_per_hour: float = 0.0

    @property
    def parts(self) -> list[str]:
        return [p for p in self.resource_id.split("/") if p]

    @property
    def subscription_id(self) -> str:
        p = self.parts
        return p[1] if len(p) > 1 and p[0].lower() == "subscriptions" else ""

    @property
    def resource_group_id(self) -> str:
        p = self.parts
        if len(p) >= 4 and p[2].lower() == "resourcegroups":
            return "/" + "/".join(p[:4])
        return ""

    @property
    def resource_type(self) -> str:
        """`Microsoft.Compute/virtualMachines`, `Microsoft.ContainerService/managedClusters/agentPools`, ..."""
        p = self.parts
        if len(p) < 8 or p[4].lower() != "providers":
            return "resourceGroup" if len(p) == 4 and self.resource_group_id else ""
        types = [p[5]] + [p[i] for i in range(6, len(p), 2)]
        return "/".join(types)


class CostAction:
    """Base of every registered action. Subclasses set `name`, `resource_types` and a docstring."""

    name: ClassVar[str] = ""
    resource_types: ClassVar[tuple[str, ...]] = ()
    schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}, "additionalProperties": False}

    def validate(self, target: ActionTarget) -> None:
        """BadInputError when the action does not apply to the target."""
        if not target.subscription_id or not target.resource_group_id:
            raise BadInputError(f"{self.name}: {target.resource_id!r} is not an Azure resource id")
        if target.resource_type.lower() not in {t.lower() for t in self.resource_types}:
            raise BadInputError(
                f"{self.name} applies to {', '.join(self.resource_types)}, not {target.resource_type or 'this id'}"
            )

    def guarded_ids(self, target: ActionTarget) -> list[str]:
        """The ids whose tags are read before acting (the resource, its parent, its resource group)."""
        return [target.resource_id, target.resource_group_id]

    def plan(self, target: ActionTarget) -> list[PlannedCall]:
        raise NotImplementedError

    def execute(self, arm: ArmClient, target: ActionTarget) -> ArmResult:
        raise NotImplementedError


ACTIONS: dict[str, CostAction] = {}


def register(name: str) -> Callable[[type[CostAction]], type[CostAction]]:
    """Class decorator: make an action available under `name`."""

    def wrap(cls: type[CostAction]) -> type[CostAction]:
        if name in ACTIONS:
            raise ValueError(f"action {name} registered twice")
        cls.name = name
        ACTIONS[name] = cls()
        return cls

    return wrap


@register("deallocate_vm")
class DeallocateVm(CostAction):
    """Deallocate a VM: compute billing stops, disks stay. Reversible by starting it again.

    Example: {"action": "deallocate_vm", "resourceId": "/subscriptions/<s>/resourceGroups/<rg>/providers/
    Microsoft.Compute/virtualMachines/<vm>"} -> POST <vm>/deallocate?api-version=2024-07-01 (202 Accepted).
    """

    resource_types = ("Microsoft.Compute/virtualMachines",)

    def plan(self, target: ActionTarget) -> list[PlannedCall]:
        return [PlannedCall("POST", f"{target.resource_id}/deallocate", VM_API, "deallocate the VM")]

    def execute(self, arm: ArmClient, target: ActionTarget) -> ArmResult:
        return call(arm, "POST", f"{target.resource_id}/deallocate", VM_API)


@register("stop_app_service")
class StopAppService(CostAction):
    """Stop an App Service app (the plan keeps billing; stopping ends the runaway workload's cost driver).

    Example: POST /subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.Web/sites/<app>/stop.
    """

    resource_types = ("Microsoft.Web/sites",)

    def plan(self, target: ActionTarget) -> list[PlannedCall]:
        return [PlannedCall("POST", f"{target.resource_id}/stop", WEB_API, "stop the app")]

    def execute(self, arm: ArmClient, target: ActionTarget) -> ArmResult:
        return call(arm, "POST", f"{target.resource_id}/stop", WEB_API)


@register("scale_aks_nodepool")
class ScaleAksNodePool(CostAction):
    """Scale an AKS node pool down to its minimum: the autoscaler's minCount (or 1), autoscaling off.

    Example: GET .../managedClusters/<c>/agentPools/<pool>, then PUT it back with count = minCount
    (or 1) and enableAutoScaling = false, so the autoscaler cannot scale it back up meanwhile.
    """

    resource_types = ("Microsoft.ContainerService/managedClusters/agentPools",)

    def guarded_ids(self, target: ActionTarget) -> list[str]:
        cluster = "/" + "/".join(target.parts[:8])
        return [cluster, target.resource_group_id]

    def plan(self, target: ActionTarget) -> list[PlannedCall]:
        return [
            PlannedCall("GET", target.resource_id, AKS_API, "read the node pool (minCount, autoscaling)"),
            PlannedCall("PUT", target.resource_id, AKS_API, "count = minCount or 1, autoscaling off"),
        ]

    def execute(self, arm: ArmClient, target: ActionTarget) -> ArmResult:
        pool = call(arm, "GET", target.resource_id, AKS_API).body
        props = dict(pool.get("properties") or {})
        minimum = props.get("minCount") if props.get("enableAutoScaling") else None
        count = max(int(minimum), 1) if isinstance(minimum, int) else 1
        props.update({"count": count, "enableAutoScaling": False, "minCount": None, "maxCount": None})
        for read_only in ("provisioningState", "powerState", "nodeImageVersion", "currentOrchestratorVersion"):
            props.pop(read_only, None)
        return call(arm, "PUT", target.resource_id, AKS_API, {"properties": props})


@register("apply_budget")
class ApplyBudget(CostAction):
    """Create, or tighten, a monthly Cost Management budget on the resource's resource group.

    The amount is the expected monthly cost (expected $/day x 31, at least 1); an existing budget is
    only ever lowered, never raised. Example: PUT /subscriptions/<s>/resourceGroups/<rg>/providers/
    Microsoft.Consumption/budgets/valueflow-cost-guard?api-version=2023-11-01 with alerts at 80% and 100%.
    """

    resource_types = ("*",)

    def validate(self, target: ActionTarget) -> None:
        if not target.subscription_id or not target.resource_group_id:
            raise BadInputError(f"apply_budget needs a resource in a resource group, not {target.resource_id!r}")

    def guarded_ids(self, target: ActionTarget) -> list[str]:
        # the resource itself only where we know an api-version to read it with
        known = _read_api(target.resource_id) != RG_API and target.resource_type != "resourceGroup"
        return [target.resource_id, target.resource_group_id] if known else [target.resource_group_id]

    def amount(self, target: ActionTarget) -> float:
        return float(max(round(target.expected_usd_per_day * 31), 1))

    def _path(self, target: ActionTarget) -> str:
        return f"{target.resource_group_id}/providers/Microsoft.Consumption/budgets/{BUDGET_NAME}"

    def plan(self, target: ActionTarget) -> list[PlannedCall]:
        path = self._path(target)
        return [
            PlannedCall("GET", path, BUDGET_API, "read the current budget (eTag, amount)"),
            PlannedCall("PUT", path, BUDGET_API, f"monthly budget of {self.amount(target):.0f} (only lower)"),
        ]

    def execute(self, arm: ArmClient, target: ActionTarget) -> ArmResult:
        path = self._path(target)
        try:
            current = call(arm, "GET", path, BUDGET_API).body
        except NotFoundError:
            current = {}
        amount = self.amount(target)
        existing = (current.get("properties") or {}).get("amount")
        if isinstance(existing, (int, float)) and existing <= amount:
            return ArmResult(200, {"unchanged": True, "amount": existing})
        start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        body: dict[str, Any] = {
            "properties": {
                "category": "Cost",
                "amount": amount,
                "timeGrain": "Monthly",
                "timePeriod": {"startDate": start.strftime("%Y-%m-%dT%H:%M:%SZ")},
                "notifications": {
                    f"Actual_GreaterThan_{pct}_Percent": {
                        "enabled": True,
                        "operator": "GreaterThan",
                        "threshold": pct,
                        "contactRoles": ["Owner", "Contributor"],
                    }
                    for pct in (80, 100)
                },
            }
        }
        if current.get("eTag"):
            body["eTag"] = current["eTag"]
        return call(arm, "PUT", path, BUDGET_API, body)


@register("escalate")
class EscalateOnly(CostAction):
    """No change in Azure: the approval only hands the anomaly to a human (an escalation alert)."""

    resource_types = ("*",)

    def validate(self, target: ActionTarget) -> None:
        return None

    def guarded_ids(self, target: ActionTarget) -> list[str]:
        return []

    def plan(self, target: ActionTarget) -> list[PlannedCall]:
        return []

    def execute(self, arm: ArmClient, target: ActionTarget) -> ArmResult:
        return ArmResult(0, {})


# Logic App intents -> registered action per resource type
INTENTS: dict[str, dict[str, str]] = {
    "stop": {"microsoft.compute/virtualmachines": "deallocate_vm", "microsoft.web/sites": "stop_app_service"},
    "scale_down": {"microsoft.containerservice/managedclusters/agentpools": "scale_aks_nodepool"},
    "apply_budget": {"*": "apply_budget"},
    "escalate": {"*": "escalate"},
}


def action_names() -> list[str]:
    """Every name an approval may carry: Logic App intents and registered actions."""
    return sorted(set(ACTIONS) | set(INTENTS))


def known_action(name: str) -> bool:
    return name in ACTIONS or name in INTENTS


def resolve_action(name: str, resource_id: str) -> CostAction:
    """The registered action for an action name or Logic App intent on this resource; BadInputError otherwise."""
    if name in ACTIONS:
        return ACTIONS[name]
    if name not in INTENTS:
        choices = ", ".join(action_names())
        raise BadInputError(f"unknown action {name!r}; expected one of {choices}")
    rtype = ActionTarget(resource_id).resource_type.lower()
    table = INTENTS[name]
    chosen = table.get(rtype) or table.get("*")
    if chosen is None:
        raise BadInputError(f"action {name!r} does not apply to {rtype or resource_id!r}")
    return ACTIONS[chosen]


def proposed_intent(resource_id: str) -> str:
    """The intent the cost job proposes for a resource: stop VMs and apps, scale pools, else a budget."""
    rtype = ActionTarget(resource_id).resource_type.lower()
    for intent in ("stop", "scale_down"):
        if rtype in INTENTS[intent]:
            return intent
    return "apply_budget" if ActionTarget(resource_id).resource_group_id else "escalate"


def call(arm: ArmClient, method: str, path: str, api_version: str, body: Any = None) -> ArmResult:
    """One ARM request, its answer normalised to (status, JSON body)."""
    answer = arm.request(method, path, api_version, body)
    return normalise(answer)


def normalise(answer: Any) -> ArmResult:
    if isinstance(answer, ArmResult):
        return answer
    if answer is None or isinstance(answer, dict):  # Arm.request returns the JSON body of a 2xx answer
        return ArmResult(None, answer or {})
    status = getattr(answer, "status", None) or getattr(answer, "status_code", None) or 200
    body: Any = getattr(answer, "body", None)
    if body is None and hasattr(answer, "json"):
        try:
            body = answer.json() if callable(answer.json) else answer.json
        except ValueError:
            body = {}
    return ArmResult(int(status), body if isinstance(body, dict) else {})


def is_protected(tags: dict[str, Any] | None, tag_key: str) -> bool:
    """True when the protect tag (key case-insensitive, as ARM tag keys are) has the value true."""
    for key, value in (tags or {}).items():
        if key.lower() == tag_key.lower() and str(value).strip().lower() == "true":
            return True
    return False


@dataclass(frozen=True)
class GuardRails:
    mode: str  # dry-run | enforce
    protected_subscriptions: tuple[str, ...]
    protected_tag: str

    @classmethod
    def from_settings(cls, settings: Any) -> GuardRails:
        return cls(settings.remediation_mode, settings.actions_protected_subscriptions, settings.actions_protected_tag)


def run_action(
    action_name: str, target: ActionTarget, rails: GuardRails, arm_factory: Callable[[], ArmClient]
) -> ActionOutcome:
    """Apply the guard rails, then run the action (enforce) or describe it (dry-run). A refusal or a
    permanent ARM failure is an outcome; only TransientUpstreamError (429, 5xx) is raised, to retry."""
    mode = rails.mode
    try:
        encode_resource_path(target.resource_id)  # '..', '.' or empty segments would redirect the ARM calls
        action = resolve_action(action_name, target.resource_id)
        action.validate(target)
    except BadInputError as err:
        return ActionOutcome(action_name, "refused", mode, err.detail)
    name = action.name
    if name == "escalate":
        return ActionOutcome(name, "skipped", mode, "no change in Azure: handed to a human")
    protected = {s.lower() for s in rails.protected_subscriptions}
    if target.subscription_id.lower() in protected:
        return ActionOutcome(
            name, "refused", mode, f"subscription {target.subscription_id} is in ACTIONS_PROTECTED_SUBSCRIPTIONS"
        )
    planned = action.plan(target)
    if mode != "enforce":
        steps = "; ".join(f"{c.method} {c.path}?api-version={c.api_version} ({c.why})" for c in planned)
        return ActionOutcome(
            name,
            "dry_run",
            mode,
            f"dry-run: would {steps}",
            calls=tuple(c.as_dict() for c in planned),
        )
    arm = arm_factory()
    try:
        for resource in action.guarded_ids(target):
            tags = _tags_of(arm, resource)
            if is_protected(tags, rails.protected_tag):
                return ActionOutcome(name, "refused", mode, f"{resource} is tagged {rails.protected_tag}=true")
        result = action.execute(arm, target)
    except TransientUpstreamError:
        raise  # throttled or unavailable: the queue retries the whole (idempotent) action later
    except ValueFlowError as err:
        status = err.status if isinstance(err, (UpstreamError, NotFoundError)) else None
        log.warning("cost action %s on %s failed: %s", name, target.resource_id, err.detail)
        return ActionOutcome(name, "failed", mode, err.detail, arm_status=status)
    return ActionOutcome(
        name,
        "executed",
        mode,
        f"{name} done on {target.resource_id} (ARM {result.status or '2xx'})",
        arm_status=result.status,
        arm_response=_trim(result.body),
        calls=tuple(c.as_dict() for c in planned),
    )


def _tags_of(arm: ArmClient, resource_id: str) -> dict[str, Any]:
    api = RG_API if ActionTarget(resource_id).resource_type == "resourceGroup" else _read_api(resource_id)
    body = call(arm, "GET", resource_id, api).body
    tags = body.get("tags")
    return tags if isinstance(tags, dict) else {}


def _read_api(resource_id: str) -> str:
    rtype = ActionTarget(resource_id).resource_type.lower()
    if rtype.startswith("microsoft.compute/"):
        return VM_API
    if rtype.startswith("microsoft.containerservice/"):
        return AKS_API
    if rtype.startswith("microsoft.web/"):
        return WEB_API
    return RG_API


def _trim(body: dict[str, Any], limit: int = 4000) -> dict[str, Any]:
    """Keep the ARM answer small enough for a table entity and an audit row."""
    import json

    text = json.dumps(body, default=str)
    return body if len(text) <= limit else {"truncated": text[:limit]}
