"""The Terraform in infra/ wires every function and setting the code declares.

No provider can be downloaded here, so `terraform validate` cannot run: these tests parse the HCL
(python-hcl2) and compare it with the real app (`function_app.app`) and the settings module
(`shared.settings.specs()`). Adding a function or a setting in code without its infra counterpart
fails here, and so does infra that points at a function the app does not have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra"

# Settings the code declares that must NOT be app settings in Azure, each with why.
DEV_ONLY = {
    "WAREHOUSE_PATH",  # embedded warehouse folder; Azure uses WAREHOUSE=snowflake
    "WAREHOUSE_EMBEDDED_MEMORY_MB",  # memory limit of the embedded DuckDB warehouse
    "VALUEFLOW_STATE_DIR",  # local host state (Azurite data, generated key)
    "VALUEFLOW_PORT",  # port of the local host
    "LOCAL_FUNCTION_KEY",  # key of the local host; Azure has its own host keys
    "OUTBOX_DIR",  # local outbox folder; Azure posts to Teams/ServiceNow
    "VALUEFLOW_FAKE_ARM",  # `make run` starts a local fake ARM; Azure talks to the real one
    "AZURITE_PORTS",  # ports of the local storage emulator
}
REPLACED_BY_IDENTITY = {
    "AzureWebJobsStorage",  # connection string replaced by AzureWebJobsStorage__accountName + managed identity
    "COST_EXPORT_STORAGE",  # connection string replaced by COST_EXPORT_STORAGE__accountName + managed identity
}
# Settings whose code default is right in Azure, so infra need not set them (each with why).
DEFAULT_OK: set[str] = {
    "AZURE_STORAGE_ENDPOINT_SUFFIX",  # only for an account name without service URIs; infra sets the URIs
    "REVIEW_LINK_DAYS",  # 14 days, as the issue asks
    "REVIEW_BASE_URL",  # empty = https://WEBSITE_HOSTNAME; set only behind a custom domain or Front Door
    "WEBSITE_HOSTNAME",  # set by the platform
    "WEBSITE_AUTH_ENABLED",  # set by the platform when App Service Authentication is on
    "COST_INGEST_BLOCK_MB",  # ingest block size: the default bounds memory on Flex Consumption
    "COST_INGEST_FLUSH_ROWS",  # rows per staged bulk load: the default suits Snowflake's write_pandas
}
# Set through the provider's site_config (it moves the app setting there on read) and in the final
# app settings; not a Key Vault secret: with local auth disabled it cannot ingest without a token.
SITE_CONFIG_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING"}

# App settings infra sets that the settings module does not declare: read by the platform or SDKs.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__credential",  # identity-based host storage
    "AzureWebJobsStorage__clientId",  # which user-assigned identity the host uses
    "AZURE_CLIENT_ID",  # DefaultAzureCredential -> the user-assigned identity
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",  # host telemetry with Entra auth
}

# Names in the storage contract of the code (shared/ adapters and function bindings).
TABLES = {"idempotency", "episodes", "policystate", "remediations", "approvals", "audit", "killswitches"}
CONTAINERS = {"reports", "eventgrid-deadletter", "alerts-outbox"}
COST_EXPORT_CONTAINER = "cost-exports"

_OPTIONS = hcl2.SerializationOptions(with_comments=False, strip_string_quotes=True, explicit_blocks=False)


# ------------------------------------------------------------------------------------------------
# Reading infra/ and the app
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    body: dict[str, Any]
    file: str

    @property
    def address(self) -> str:
        return f"{self.type}.{self.name} ({self.file})"


@dataclass(frozen=True)
class Infra:
    resources: list[Resource]
    locals: dict[str, Any]

    def of_type(self, *types: str) -> list[Resource]:
        return [r for r in self.resources if r.type in types]

    def one(self, type_: str, name: str) -> Resource:
        matches = [r for r in self.resources if r.type == type_ and r.name == name]
        assert len(matches) == 1, f"expected exactly one {type_}.{name} in infra/"
        return matches[0]


@cache
def load_infra() -> Infra:
    resources: list[Resource] = []
    locals_: dict[str, Any] = {}
    for path in sorted(INFRA.glob("*.tf")):
        doc = hcl2.loads(path.read_text(encoding="utf-8"), serialization_options=_OPTIONS)
        for block in doc.get("resource", []):
            for type_, named in block.items():
                for name, body in named.items():
                    resources.append(Resource(type_, name, body, path.name))
        for block in doc.get("locals", []):
            duplicated = set(block) & set(locals_)
            assert not duplicated, f"local values defined twice: {duplicated}"
            locals_.update(block)
    return Infra(resources, locals_)


def first(value: Any) -> Any:
    """A nested block parses as a list of one dict; an attribute as the value itself."""
    return value[0] if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) else value


@dataclass(frozen=True)
class AppFunction:
    name: str
    trigger_type: str
    trigger: dict[str, Any]


@cache
def app_functions() -> dict[str, AppFunction]:
    import function_app
    from devhost.index import list_functions

    out = {}
    for fn in list_functions(function_app.app):
        trigger = fn.get_trigger().get_dict_repr()
        out[fn.get_function_name()] = AppFunction(fn.get_function_name(), trigger["type"], trigger)
    assert out, "function_app.app registers no function"
    return out


def functions_of(trigger_type: str) -> dict[str, AppFunction]:
    return {n: f for n, f in app_functions().items() if f.trigger_type == trigger_type}


@cache
def setting_specs() -> dict[str, Any]:
    from shared.settings import specs

    return {spec.name: spec for spec in specs()}


def plain_app_settings() -> dict[str, Any]:
    return load_infra().locals["plain_app_settings"]


def key_vault_settings() -> dict[str, str]:
    """Secret setting name -> Key Vault secret name (every one becomes a Key Vault reference)."""
    return load_infra().locals["secret_settings"]


def app_settings_in_infra() -> set[str]:
    return set(plain_app_settings()) | set(key_vault_settings()) | SITE_CONFIG_SETTINGS


def binding_setting(expression: str) -> str | None:
    """`%NAME%` -> NAME (a binding expression resolved from app settings), else None."""
    match = re.fullmatch(r"%([A-Za-z0-9_]+)%", expression.strip())
    return match.group(1) if match else None


def event_grid_destinations() -> list[tuple[str, str]]:
    """(resource address, function name) of every Event Grid subscription in infra/."""
    out = []
    for res in load_infra().of_type(
        "azurerm_eventgrid_system_topic_event_subscription", "azurerm_eventgrid_event_subscription"
    ):
        assert "webhook_endpoint" not in res.body, f"{res.address}: use azure_function_endpoint, no key in a URL"
        function_id = first(res.body["azure_function_endpoint"])["function_id"]
        out.append((res.address, function_id))
    for res in load_infra().of_type("azapi_resource"):
        if "eventSubscriptions" not in res.body["type"]:
            continue
        destination = res.body["body"]["properties"]["destination"]
        assert destination["endpointType"] == "AzureFunction", f"{res.address}: deliver to the function endpoint"
        out.append((res.address, destination["properties"]["resourceId"]))
    names = []
    for address, function_id in out:
        match = re.fullmatch(r"\$\{local\.function_app_id\}/functions/([A-Za-z0-9_]+)", function_id)
        assert match, f"{address}: function id {function_id!r} is not <function app id>/functions/<name>"
        names.append((address, match.group(1)))
    return names


# ------------------------------------------------------------------------------------------------
# Functions
# ------------------------------------------------------------------------------------------------


def test_every_event_grid_subscription_points_at_an_event_grid_function_of_the_app():
    destinations = event_grid_destinations()
    assert destinations, "infra/ has no Event Grid subscription"
    for address, name in destinations:
        assert name in app_functions(), f"{address} delivers to {name!r}, which function_app.app does not have"
        assert app_functions()[name].trigger_type == "eventGridTrigger", (
            f"{address} delivers to {name!r}, a {app_functions()[name].trigger_type}, not an Event Grid trigger"
        )


def test_every_event_grid_function_of_the_app_has_a_subscription():
    subscribed = {name for _, name in event_grid_destinations()}
    missing = set(functions_of("eventGridTrigger")) - subscribed
    assert not missing, f"Event Grid functions without an Event Grid subscription in infra/: {sorted(missing)}"


def test_policy_events_subscription_filters_policy_state_events_on_compliance_state():
    sub = load_infra().one("azapi_resource", "policy_event_subscription").body["body"]["properties"]
    assert set(sub["filter"]["includedEventTypes"]) == {
        "Microsoft.PolicyInsights.PolicyStateCreated",
        "Microsoft.PolicyInsights.PolicyStateChanged",
        "Microsoft.PolicyInsights.PolicyStateDeleted",
    }
    assert [f["key"] for f in sub["filter"]["advancedFilters"]] == ["data.complianceState"]
    assert sub["retryPolicy"]["maxDeliveryAttempts"]
    dead_letter = sub["deadLetterWithResourceIdentity"]["deadLetterDestination"]
    assert dead_letter["properties"]["blobContainerName"] == "${local.dead_letter_container}"
    assert load_infra().locals["dead_letter_container"] == "eventgrid-deadletter"


def test_cost_export_subscription_fires_only_for_manifests_in_the_export_container():
    sub = load_infra().one("azurerm_eventgrid_system_topic_event_subscription", "cost_export_manifest").body
    assert sub["included_event_types"] == ["Microsoft.Storage.BlobCreated"]
    subject = first(sub["subject_filter"])
    assert subject["subject_begins_with"] == "/blobServices/default/containers/${local.cost_export_container}/"
    assert subject["subject_ends_with"] == "/manifest.json"
    assert load_infra().locals["cost_export_container"] == COST_EXPORT_CONTAINER
    assert "storage_blob_dead_letter_destination" in sub and "retry_policy" in sub


def test_every_timer_schedule_setting_is_an_app_setting():
    timers = functions_of("timerTrigger")
    for fn in timers.values():
        setting = binding_setting(fn.trigger["schedule"])
        if setting is None:
            continue  # a literal NCRONTAB needs nothing from infra
        assert setting in plain_app_settings(), f"{fn.name}: schedule %{setting}% is not an app setting in infra/"


def test_every_queue_trigger_queue_and_its_poison_queue_are_created():
    infra = load_infra().locals
    created = set(infra["app_queues"])
    assert "local.app_queues" in infra["all_queues"] and "-poison" in infra["all_queues"], "poison queues not created"
    for fn in functions_of("queueTrigger").values():
        queue = fn.trigger["queueName"]
        assert binding_setting(queue) is None, f"{fn.name}: queue names are fixed in the contract, got {queue}"
        assert queue in created, f"{fn.name}: queue {queue!r} is not created in infra/ (local.app_queues)"


def test_queue_triggers_use_the_identity_based_host_storage():
    for fn in functions_of("queueTrigger").values():
        connection = fn.trigger.get("connection") or "AzureWebJobsStorage"
        assert f"{connection}__accountName" in plain_app_settings(), (
            f"{fn.name}: connection {connection!r} has no identity-based {connection}__accountName app setting"
        )
        assert plain_app_settings().get(f"{connection}__credential") == "managedidentity"


def test_every_function_has_an_infra_counterpart_for_its_trigger_type():
    # HTTP needs nothing; the other known types are checked by the tests above. A new trigger
    # type (blob, Service Bus, ...) needs infra and a check here before it can ship.
    known = {"httpTrigger", "eventGridTrigger", "timerTrigger", "queueTrigger"}
    unknown = {n: f.trigger_type for n, f in app_functions().items() if f.trigger_type not in known}
    assert not unknown, f"functions whose trigger type infra/ does not wire yet: {unknown}"


def test_storage_has_every_table_and_container_the_code_uses():
    infra = load_infra().locals
    assert not TABLES - set(infra["app_tables"]), "tables missing in infra/storage.tf"
    assert not CONTAINERS - set(infra["app_containers"]), "containers missing in infra/storage.tf"


# ------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------


def test_every_setting_the_code_declares_is_set_in_the_function_app_or_explicitly_exempt():
    exempt = DEV_ONLY | REPLACED_BY_IDENTITY | DEFAULT_OK
    missing = set(setting_specs()) - app_settings_in_infra() - exempt
    assert not missing, (
        f"settings declared in shared/settings.py but not set in infra/functionapp.tf (or keyvault.tf for "
        f"secrets): {sorted(missing)}. Set them, or list them in DEV_ONLY/DEFAULT_OK with a reason."
    )


def test_exempt_lists_name_only_settings_the_code_declares():
    stale = (DEV_ONLY | REPLACED_BY_IDENTITY | DEFAULT_OK) - set(setting_specs())
    assert not stale, f"exempt settings the code no longer declares: {sorted(stale)}"
    assert not (DEV_ONLY | REPLACED_BY_IDENTITY) & app_settings_in_infra(), "a dev-only setting is set in Azure"


def test_every_app_setting_in_infra_is_known_to_the_code_or_the_platform():
    bindings = {binding_setting(fn.trigger.get("schedule", "")) for fn in functions_of("timerTrigger").values()} - {
        None
    }
    unknown = app_settings_in_infra() - set(setting_specs()) - PLATFORM_SETTINGS - bindings
    assert not unknown, f"app settings in infra/ that nothing reads (typo?): {sorted(unknown)}"


def test_identity_based_host_storage_replaces_the_connection_string():
    settings = plain_app_settings()
    assert settings["AzureWebJobsStorage__accountName"] == "${azurerm_storage_account.app.name}"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "${azurerm_user_assigned_identity.app.client_id}"
    assert "AzureWebJobsStorage" not in app_settings_in_infra()


def test_azure_runs_on_snowflake():
    assert plain_app_settings()["WAREHOUSE"] == "snowflake"


def test_every_secret_setting_is_a_key_vault_reference_never_a_plain_value():
    secrets = (
        {name for name, spec in setting_specs().items() if spec.secret}
        - DEV_ONLY
        - REPLACED_BY_IDENTITY
        - SITE_CONFIG_SETTINGS
    )
    in_plain = secrets & set(plain_app_settings())
    assert not in_plain, f"secret settings with a plain value in infra/: {sorted(in_plain)}"
    without_secret = secrets - set(key_vault_settings())
    assert not without_secret, f"secret settings without a secret in infra/keyvault.tf: {sorted(without_secret)}"
    references = load_infra().locals["key_vault_reference_settings"]
    assert "for setting, secret in local.secret_settings" in references
    assert "@Microsoft.KeyVault(SecretUri=${azurerm_key_vault.main.vault_uri}secrets/${secret}/)" in references


def test_function_app_settings_are_the_plain_settings_plus_key_vault_references_only():
    infra = load_infra()
    app = infra.one("azurerm_function_app_flex_consumption", "app").body
    assert app["app_settings"] == "${local.final_app_settings}"
    final = infra.locals["final_app_settings"]
    assert final.startswith("${merge(local.plain_app_settings, local.key_vault_reference_settings, ")
    extra = re.findall(r'"([A-Za-z0-9_]+)"\s*=', final)
    assert extra == ["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    site_config = first(app["site_config"])
    assert site_config["application_insights_connection_string"] == (
        "${azurerm_application_insights.main.connection_string}"
    )


def test_final_app_settings_replace_the_providers_and_have_no_azure_web_jobs_storage_key():
    # GIVEN the provider writes AzureWebJobsStorage (with an empty key) on Flex apps
    infra = load_infra()
    app = infra.one("azurerm_function_app_flex_consumption", "app").body
    assert "app_settings" in first(app["lifecycle"])["ignore_changes"][0]
    # WHEN the final settings are PUT as a whole on config/appsettings, after every app change
    put = infra.one("azapi_resource_action", "app_settings").body
    assert (put["action"], put["method"]) == ("config/appsettings", "PUT")
    assert put["resource_id"] == "${azurerm_function_app_flex_consumption.app.id}"
    assert put["body"]["properties"] == "${local.final_app_settings}"
    assert "azurerm_function_app_flex_consumption.app" in str(first(put["lifecycle"])["replace_triggered_by"])
    # THEN no key of the final settings is AzureWebJobsStorage itself
    names = set(plain_app_settings()) | set(key_vault_settings()) | SITE_CONFIG_SETTINGS
    assert "AzureWebJobsStorage" not in names
    assert {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential"} <= names


def test_app_restarts_after_late_secrets_and_starts_after_role_propagation():
    infra = load_infra()
    restart = infra.one("azapi_resource_action", "app_restart").body
    assert restart["action"] == "restart"
    assert "terraform_data.late_secrets" in str(first(restart["lifecycle"])["replace_triggered_by"])
    late = infra.one("terraform_data", "late_secrets").body
    assert "azurerm_key_vault_secret.approval_logic_app_url.version" in str(late["input"])
    app = infra.one("azurerm_function_app_flex_consumption", "app").body
    assert "time_sleep.rbac_propagation" in str(app["depends_on"])
    for secret in infra.of_type("azurerm_key_vault_secret"):
        assert "time_sleep.rbac_propagation" in str(secret.body["depends_on"]), secret.address


def test_operator_secrets_accepted_by_the_variable_are_exactly_the_non_terraform_secrets():
    text = (INFRA / "variables.tf").read_text(encoding="utf-8")
    block = text[text.index('variable "secrets_in_key_vault"') :]
    block = block[: block.index("error_message")]
    accepted = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', block))
    managed = set(load_infra().locals["terraform_managed_secret_settings"])
    assert accepted | managed == set(key_vault_settings())
    assert not accepted & managed


@pytest.mark.parametrize(
    "pattern",
    [r"AccountKey=", r"SharedAccessSignature=", r"[?&]sig=", r"-----BEGIN", r"[?&]code=[A-Za-z0-9]"],
)
def test_no_secret_material_is_written_in_infra(pattern):
    for path in [*INFRA.glob("*.tf"), *INFRA.glob("*.tfvars*"), *INFRA.glob("logicapp/*.json")]:
        assert not re.search(pattern, path.read_text(encoding="utf-8")), f"{path.name} contains {pattern!r}"


# ------------------------------------------------------------------------------------------------
# Role assignments
# ------------------------------------------------------------------------------------------------

# A subscription from one of the validated GUID lists, or one resource's id.
_SUBSCRIPTION_SCOPE = re.compile(r"/subscriptions/\$\{each\.key\}")
_RESOURCE_SCOPE = re.compile(
    r"\$\{(?:(?:azurerm_[a-z_]+|azapi_resource)\.[a-z_]+(?:\[[^\]]+\])?|each\.value)"
    r"\.(?:id|resource_manager_id|resource_versionless_id)\}"
)
_SUBSCRIPTION_SETS = {
    "${local.target_subscriptions}",
    "${local.remediation_subscriptions}",
    "${local.action_subscriptions}",
}


def test_every_role_assignment_scope_is_narrower_than_a_management_group():
    assignments = load_infra().of_type("azurerm_role_assignment")
    assert assignments
    for res in assignments:
        scope = res.body["scope"]
        assert "managementGroups" not in scope and "tenant" not in scope.lower(), f"{res.address}: {scope}"
        if scope == "${each.key}":
            # only the validated COST_QUERY_SCOPES (subscriptions or resource groups)
            assert res.body["for_each"] == "${local.cost_query_extra_scopes}", res.address
            continue
        if _SUBSCRIPTION_SCOPE.fullmatch(scope):
            assert res.body["for_each"] in _SUBSCRIPTION_SETS, f"{res.address}: subscriptions must come from a list"
            continue
        assert _RESOURCE_SCOPE.fullmatch(scope), f"{res.address}: {scope!r} is neither a subscription nor a resource"
        referenced = scope[2:].split(".")[0]
        assert referenced != "azurerm_management_group", f"{res.address}: management group scope"


def test_custom_role_is_assignable_only_to_action_subscriptions_with_exactly_the_cost_actions():
    role = load_infra().one("azurerm_role_definition", "cost_actions").body
    assert role["scope"].startswith("/subscriptions/")
    assert role["assignable_scopes"].startswith("${[for id in sort(tolist(local.action_subscriptions))")
    assert first(role["permissions"])["actions"] == "${local.cost_action_permissions}"
    assert set(load_infra().locals["cost_action_permissions"]) == {
        "Microsoft.Compute/virtualMachines/deallocate/action",
        "Microsoft.ContainerService/managedClusters/agentPools/write",
        "Microsoft.Consumption/budgets/write",
        "Microsoft.Web/sites/stop/action",
    }


def test_remediation_rights_only_on_subscriptions_where_remediation_is_enabled():
    res = load_infra().one("azurerm_role_assignment", "app_policy_remediation").body
    assert res["role_definition_id"] == "${azurerm_role_definition.policy_remediation[0].role_definition_resource_id}"
    assert res["for_each"] == "${local.remediation_subscriptions}"
    # a custom role: remediation tasks only (Resource Policy Contributor could write assignments and exemptions)
    assert set(load_infra().locals["policy_remediation_permissions"]) == {
        "Microsoft.PolicyInsights/remediations/write",
        "Microsoft.PolicyInsights/remediations/read",
        "Microsoft.PolicyInsights/remediations/listDeployments/read",
    }
    broad = {
        "Owner",
        "Contributor",
        "User Access Administrator",
        "Role Based Access Control Administrator",
        "Resource Policy Contributor",
    }
    for assignment in load_infra().of_type("azurerm_role_assignment"):
        assert assignment.body.get("role_definition_name") not in broad, f"{assignment.address}: too broad"


def test_the_app_identity_reads_key_vault_secrets_only():
    kv = [
        r.body["role_definition_name"]
        for r in load_infra().of_type("azurerm_role_assignment")
        if r.body["scope"] == "${azurerm_key_vault.main.id}" and r.body["principal_id"] == "${local.app_principal_id}"
    ]
    assert kv == ["Key Vault Secrets User"]
