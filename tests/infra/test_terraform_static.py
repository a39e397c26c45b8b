"""Static checks of infra/, azure.yaml and .funcignore that need no Azure and no provider download.

Variable validation is exercised for real: variables.tf alone is a module without providers, so
`terraform init` works offline and `terraform plan` evaluates the validation blocks.
(`terraform fmt -check` and checkov run from the Makefile's infra lint target.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

_OPTIONS = hcl2.SerializationOptions(with_comments=False, strip_string_quotes=True, explicit_blocks=False)

VALID_VARS = {
    "subscription_id": "00000000-0000-0000-0000-000000000000",
    "environment_name": "dev",
    "location": "westeurope",
    "target_subscription_ids": ["11111111-1111-1111-1111-111111111111"],
    "budget_alert_emails": ["finops@example.com"],
    "snowflake": {"account": "myorg-acct", "user": "VALUEFLOW_SVC"},
}


@cache
def resources() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in sorted(INFRA.glob("*.tf")):
        doc = hcl2.loads(path.read_text(encoding="utf-8"), serialization_options=_OPTIONS)
        for block in doc.get("resource", []):
            for type_, named in block.items():
                for name, body in named.items():
                    out[(type_, name)] = body
    return out


@cache
def variables() -> dict[str, dict[str, Any]]:
    doc = hcl2.loads((INFRA / "variables.tf").read_text(encoding="utf-8"), serialization_options=_OPTIONS)
    return {name: body for block in doc["variable"] for name, body in block.items()}


def first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) else value


# ------------------------------------------------------------------------------------------------
# Bad input fails at plan time with a clear message
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def variables_module(tmp_path_factory):
    """A provider-less module holding only infra/variables.tf, initialised offline."""
    terraform = shutil.which("terraform")
    assert terraform, "the terraform CLI is required for the variable validation tests (terraform >= 1.9)"
    workdir = tmp_path_factory.mktemp("tfvars")
    shutil.copy(INFRA / "variables.tf", workdir / "variables.tf")
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1"}
    init = subprocess.run(
        [terraform, "init", "-input=false", "-no-color", "-backend=false"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert init.returncode == 0, init.stdout + init.stderr

    def plan(**overrides: Any) -> subprocess.CompletedProcess[str]:
        values = {**VALID_VARS, **overrides}
        (workdir / "test.tfvars.json").write_text(json.dumps(values), encoding="utf-8")
        return subprocess.run(
            [terraform, "plan", "-input=false", "-no-color", "-var-file=test.tfvars.json"],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return plan


def plan_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, "plan accepted invalid input"
    return re.sub(r"\s+", " ", result.stderr.replace("│", " "))


def test_valid_variables_plan_cleanly(variables_module):
    result = variables_module()
    assert result.returncode == 0, result.stderr


def test_empty_subscription_list_fails_with_a_clear_message(variables_module):
    assert "target_subscription_ids is empty" in plan_error(variables_module(target_subscription_ids=[]))


def test_subscription_given_as_resource_id_fails(variables_module):
    error = plan_error(
        variables_module(target_subscription_ids=["/subscriptions/11111111-1111-1111-1111-111111111111"])
    )
    assert "bare subscription GUIDs" in error


def test_bad_budget_email_fails_with_a_clear_message(variables_module):
    error = plan_error(variables_module(budget_alert_emails=["finops@example.com", "not-an-email"]))
    assert "budget_alert_emails must be valid e-mail addresses" in error


def test_display_name_region_fails_with_a_clear_message(variables_module):
    error = plan_error(variables_module(location="West Europe"))
    assert "location must be a programmatic Azure region name" in error


def test_unknown_region_fails(variables_module):
    assert "location must be" in plan_error(variables_module(location="westeurop"))


def test_remediation_outside_the_target_subscriptions_fails(variables_module):
    error = plan_error(variables_module(remediation_subscription_ids=["22222222-2222-2222-2222-222222222222"]))
    assert "must also be in target_subscription_ids" in error


def test_unknown_secret_name_fails(variables_module):
    error = plan_error(variables_module(secrets_in_key_vault=["SNOWFLAKE_PASWORD"]))
    assert "secrets_in_key_vault may only name" in error


def test_every_variable_has_a_description_and_a_type():
    for name, body in variables().items():
        assert body.get("description"), f"variable {name} has no description"
        assert body.get("type"), f"variable {name} has no type"


# ------------------------------------------------------------------------------------------------
# Security posture of the resources
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["app", "cost_exports"])
def test_storage_accounts_are_tls12_keyless_and_never_public(name):
    account = resources()[("azurerm_storage_account", name)]
    assert account["min_tls_version"] == "TLS1_2"
    assert account["https_traffic_only_enabled"] is True
    assert account["allow_nested_items_to_be_public"] is False
    assert account["shared_access_key_enabled"] is False


def test_function_app_is_flex_consumption_python_311_https_only_with_its_own_identity():
    app = resources()[("azurerm_function_app_flex_consumption", "app")]
    plan = resources()[("azurerm_service_plan", "main")]
    assert plan["sku_name"] == "FC1"
    assert (app["runtime_name"], app["runtime_version"]) == ("python", "3.11")
    assert app["https_only"] is True
    assert app["webdeploy_publish_basic_authentication_enabled"] is False
    assert first(app["site_config"])["minimum_tls_version"] == "1.2"
    assert first(app["identity"])["type"] == "UserAssigned"
    assert app["storage_authentication_type"] == "UserAssignedIdentity"
    # Key Vault references resolve with the user-assigned identity: set on the site with azapi
    # (azurerm_function_app_flex_consumption has no key_vault_reference_identity_id)
    kv_identity = resources()[("azapi_resource_action", "app_kv_identity")]
    assert kv_identity["resource_id"] == "${azurerm_function_app_flex_consumption.app.id}"
    assert kv_identity["method"] == "PATCH"
    assert kv_identity["body"]["properties"]["keyVaultReferenceIdentity"] == "${azurerm_user_assigned_identity.app.id}"


def test_key_vault_uses_rbac_and_purge_protection():
    vault = resources()[("azurerm_key_vault", "main")]
    assert vault["rbac_authorization_enabled"] is True
    assert vault["purge_protection_enabled"] is True
    assert "access_policy" not in vault


def test_every_role_assignment_says_why_in_a_comment():
    for path in sorted(INFRA.glob("*.tf")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if line.startswith('resource "azurerm_role_assignment"'):
                assert number > 0 and lines[number - 1].startswith("#"), (
                    f"{path.name}:{number + 1}: role assignment without a comment saying why"
                )


def test_checkov_skips_give_a_reason():
    for path in sorted(INFRA.glob("*.tf")):
        for skip in re.findall(r"#checkov:skip=([^\n]*)", path.read_text(encoding="utf-8")):
            check, _, reason = skip.partition(":")
            assert re.fullmatch(r"CKV2?_AZURE_\d+", check), f"{path.name}: malformed skip {skip!r}"
            assert len(reason.split()) >= 5, f"{path.name}: skip {check} needs a real reason"


# ------------------------------------------------------------------------------------------------
# Approval Logic App definition
# ------------------------------------------------------------------------------------------------


@cache
def workflow() -> dict[str, Any]:
    return json.loads((INFRA / "logicapp" / "approval-workflow.json").read_text(encoding="utf-8"))


def test_logic_app_gets_every_parameter_its_definition_requires():
    logic_app = resources()[("azapi_resource", "approval_workflow")]
    passed = set(logic_app["body"]["properties"]["parameters"])
    required = {name for name, p in workflow()["parameters"].items() if "defaultValue" not in p}
    assert required <= passed, f"parameters without a value: {sorted(required - passed)}"
    assert passed <= set(workflow()["parameters"]), "a parameter the definition does not declare"


def test_logic_app_reads_secrets_from_key_vault_with_its_identity_and_hides_them():
    actions = workflow()["actions"]
    for name in ("Get_function_key", "Get_teams_webhook"):
        inputs = actions[name]["inputs"]
        assert inputs["authentication"] == {"type": "ManagedServiceIdentity", "audience": "https://vault.azure.net"}
        assert actions[name]["runtimeConfiguration"]["secureData"]["properties"] == ["inputs", "outputs"]
    for name, action in actions.items():
        text = json.dumps(action)
        if "Get_function_key" in text or "Get_teams_webhook" in text:
            assert "secureData" in action.get("runtimeConfiguration", {}), f"{name} would log a secret"


def test_logic_app_calls_only_the_approval_endpoints_of_the_app():
    text = json.dumps(workflow())
    routes = set(re.findall(r"@\{parameters\('functionAppBaseUrl'\)\}(/api/[a-z/]+)", text))
    assert routes == {"/api/approvals", "/api/approvals/"}
    wait = workflow()["actions"]["Wait_for_decision"]
    assert wait["type"] == "HttpWebhook"
    assert wait["inputs"]["subscribe"]["body"]["callbackUrl"] == "@{listCallbackUrl()}"


# ------------------------------------------------------------------------------------------------
# azd and packaging
# ------------------------------------------------------------------------------------------------


def test_azure_yaml_deploys_the_python_function_app_with_terraform():
    doc = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert doc["infra"]["provider"] == "terraform"
    assert doc["infra"].get("path", "infra") == "infra"
    api = doc["services"]["api"]
    assert (api["language"], api["host"]) == ("python", "function")


def test_azd_finds_the_function_app_by_its_service_tag():
    app = resources()[("azurerm_function_app_flex_consumption", "app")]
    assert "'azd-service-name': 'api'" in app["tags"] or '"azd-service-name" = "api"' in app["tags"]


@pytest.mark.parametrize(
    "entry",
    [
        ".venv/",
        ".valueflow/",
        "tests/",
        "bench/",
        "devhost/",
        "infra/",
        "docs/",
        "node_modules/",
        ".ci/",
        "Makefile",
        "requirements-dev.txt",
        "local.settings*.json",
        ".git*",
        "__pycache__/",
        "*.md",
    ],
)
def test_dev_files_stay_out_of_the_package(entry):
    ignored = (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
    assert entry in ignored


@pytest.mark.parametrize("needed", ["function_app.py", "host.json", "requirements.txt", "functions/", "shared/"])
def test_the_package_keeps_what_the_host_runs(needed):
    ignored = [line for line in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines() if line]
    assert needed not in ignored
    assert needed.rstrip("/") not in ignored


# ------------------------------------------------------------------------------------------------
# Names derived from environment_name are always valid
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dev-", "a--b", "Dev", "1dev", "abcdefghijklmnopq"])
def test_environment_names_that_would_break_resource_names_fail(variables_module, name):
    assert "environment_name must be 2-16 characters" in plan_error(variables_module(environment_name=name))


def test_the_readme_environment_name_is_accepted(variables_module):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = re.search(r"azd env new (\S+)", readme)
    assert example, "README shows `azd env new <name>`"
    result = variables_module(environment_name=example.group(1))
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def derived_names(tmp_path_factory):
    """Evaluate main.tf's name locals for an environment name with `terraform console` (offline)."""
    terraform = shutil.which("terraform")
    assert terraform
    workdir = tmp_path_factory.mktemp("names")
    shutil.copy(INFRA / "variables.tf", workdir / "variables.tf")
    main = (INFRA / "main.tf").read_text(encoding="utf-8")
    start = main.index("locals {")
    end = main.index("\n}\n", start) + 3
    (workdir / "names.tf").write_text(main[start:end], encoding="utf-8")
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1"}
    init = subprocess.run(
        [terraform, "init", "-backend=false", "-no-color"], cwd=workdir, env=env, capture_output=True, text=True
    )
    assert init.returncode == 0, init.stderr

    def names(environment_name: str) -> dict[str, str]:
        values = {**VALID_VARS, "environment_name": environment_name}
        (workdir / "t.tfvars.json").write_text(json.dumps(values), encoding="utf-8")
        expr = "jsonencode({kv = local.key_vault_name, sa = local.sa_base, app = local.app_name})\n"
        out = subprocess.run(
            [terraform, "console", "-var-file=t.tfvars.json"],
            cwd=workdir,
            env=env,
            input=expr,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(json.loads(out.stdout.strip()))

    return names


@pytest.mark.parametrize(
    "environment_name", ["dev", "valueflow-dev", "abcdefghijklmnop", "a1-b2-c3-d4-e5-f6"[:16].rstrip("-")]
)
def test_key_vault_storage_and_app_names_fit_azure_rules(derived_names, environment_name):
    names = derived_names(environment_name)
    kv = names["kv"]
    assert 3 <= len(kv) <= 24 and re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", kv) and "--" not in kv, kv
    for suffix in ("app", "cost"):
        account = names["sa"] + suffix
        assert re.fullmatch(r"[a-z0-9]{3,24}", account), account
    assert len(names["app"]) <= 60 and "--" not in names["app"], names["app"]
