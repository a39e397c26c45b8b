"""infra/ against the azurerm provider schema: what `terraform validate` would refuse, offline.

Every azurerm resource and data source type, every argument and nested block (also inside
`dynamic` blocks), and every required argument is checked against the schema of the pinned
provider (tests/infra/provider_schema.py: azurerm 5.10.0 from cdktn-provider-azurerm 18.9.0).
azapi `type@api-version` strings are checked for shape, and for the minimum azapi version that
bundles their schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.infra.provider_schema import load_schema

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
_OPTIONS = hcl2.SerializationOptions(with_comments=False, strip_string_quotes=True, explicit_blocks=True)
META = {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection", "__is_block__"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return load_schema()


def parsed_files() -> dict[str, dict[str, Any]]:
    return {
        path.name: hcl2.loads(path.read_text(encoding="utf-8"), serialization_options=_OPTIONS)
        for path in sorted(INFRA.glob("*.tf"))
    }


def declarations(kind: str, prefix: str = "azurerm_") -> list[tuple[str, str, str, dict[str, Any]]]:
    """(file, type, name, body) of every `resource`/`data` block whose type starts with prefix."""
    out = []
    for file, doc in parsed_files().items():
        for entry in doc.get(kind, []):
            for rtype, named in entry.items():
                if not rtype.startswith(prefix):
                    continue
                for name, body in named.items():
                    out.append((file, rtype, name, body))
    return out


def problems_in(body: dict[str, Any], struct: str, schema: dict[str, Any], where: str) -> list[str]:
    """Unknown arguments, attributes written as blocks and missing required arguments, recursively."""
    args = schema["structs"][struct]
    out = []
    present = set()
    for key, value in body.items():
        if key in META:
            continue
        if key == "dynamic":
            for dyn in value if isinstance(value, list) else [value]:
                for label, dyn_body in dyn.items():
                    if label == "__is_block__":
                        continue
                    present.add(label)
                    if label not in args or not args[label]["block"]:
                        out.append(f"{where}: dynamic block {label!r} is not a block of this resource")
                        continue
                    for content in dyn_body.get("content", []):
                        out += problems_in(content, args[label]["block"], schema, f"{where}.{label}")
            continue
        present.add(key)
        if key not in args:
            out.append(f"{where}: unsupported argument {key!r}")
            continue
        blocks = [v for v in value if isinstance(v, dict) and v.get("__is_block__")] if isinstance(value, list) else []
        if blocks:
            nested = args[key]["block"]
            if not nested:
                out.append(f"{where}: {key!r} is an argument, not a block")
                continue
            for block in blocks:
                out += problems_in(block, nested, schema, f"{where}.{key}")
    for name, arg in args.items():
        if not arg["optional"] and name not in present:
            out.append(f"{where}: missing required argument {name!r}")
    return out


def test_the_schema_is_the_pinned_provider_major(schema):
    assert schema["provider_version"].startswith("5."), schema["provider_version"]
    versions = (INFRA / "versions.tf").read_text(encoding="utf-8")
    major_minor = ".".join(schema["provider_version"].split(".")[:2])
    assert f'version = "~> {major_minor}"' in versions, "infra/versions.tf must pin the azurerm the schema describes"


@pytest.mark.parametrize("kind", ["resource", "data"])
def test_every_azurerm_type_exists_in_the_provider(schema, kind):
    unknown = [f"{f}: {kind} {t}.{n}" for f, t, n, _ in declarations(kind) if t not in schema[kind]]
    assert not unknown, "not in azurerm " + schema["provider_version"] + ": " + "; ".join(unknown)


@pytest.mark.parametrize("kind", ["resource", "data"])
def test_every_argument_and_block_is_in_the_provider_schema(schema, kind):
    problems = []
    for file, rtype, name, body in declarations(kind):
        if rtype in schema[kind]:
            problems += problems_in(body, schema[kind][rtype], schema, f"{file}: {rtype}.{name}")
    assert not problems, "\n".join(problems)


def test_the_checker_refuses_what_azurerm_5_removed(schema):
    # GIVEN the arguments this project once used that azurerm does not have (or no longer has)
    flex = schema["resource"]["azurerm_function_app_flex_consumption"]
    body = {
        "name": "x",
        "location": "x",
        "resource_group_name": "x",
        "service_plan_id": "x",
        "runtime_name": "python",
        "runtime_version": "3.11",
        "storage_container_type": "blobContainer",
        "storage_container_endpoint": "x",
        "storage_authentication_type": "UserAssignedIdentity",
        "site_config": [{"__is_block__": True}],
        "key_vault_reference_identity_id": "x",
    }
    # WHEN checked THEN each is named
    problems = problems_in(body, flex, schema, "flex")
    assert problems == ["flex: unsupported argument 'key_vault_reference_identity_id'"]
    kv = problems_in({"enable_rbac_authorization": True}, schema["resource"]["azurerm_key_vault"], schema, "kv")
    assert "kv: unsupported argument 'enable_rbac_authorization'" in kv
    assert "kv: missing required argument 'tenant_id'" in kv
    sa = schema["resource"]["azurerm_storage_account"]
    assert "sa: unsupported argument 'queue_properties'" in problems_in(
        {"queue_properties": [{"__is_block__": True}]}, sa, schema, "sa"
    )


# azapi: the schema of each `type@api-version` ships inside the azapi provider; these are the
# versions of the types infra uses and the first azapi release that bundles them.
AZAPI_MIN_VERSION = {
    "Microsoft.CostManagement/exports@2025-03-01": (2, 4),
    "Microsoft.EventGrid/systemTopics@2025-02-15": (2, 4),
    "Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15": (2, 4),
    "Microsoft.Logic/workflows@2019-05-01": (2, 0),
    "Microsoft.Resources/resourceGroups@2024-03-01": (2, 0),
    "Microsoft.Logic/workflows/triggers@2019-05-01": (2, 0),
    "Microsoft.Web/sites@2024-11-01": (2, 0),
}
_AZAPI_TYPE = re.compile(r"^Microsoft\.[A-Za-z]+(/[A-Za-z]+)+@\d{4}-\d{2}-\d{2}(-preview)?$")


def azapi_types() -> list[tuple[str, str]]:
    out = []
    for kind in ("resource", "data"):
        for file, _rtype, name, body in declarations(kind, prefix="azapi_"):
            out.append((f"{file}: {name}", str(body.get("type", ""))))
    return out


def test_azapi_types_are_known_and_the_pinned_azapi_bundles_them():
    versions = (INFRA / "versions.tf").read_text(encoding="utf-8")
    pinned = re.search(r'source\s*=\s*"Azure/azapi"\s*version\s*=\s*"~>\s*(\d+)\.(\d+)"', versions)
    assert pinned, "pin azapi as ~> MAJOR.MINOR in infra/versions.tf"
    have = (int(pinned.group(1)), int(pinned.group(2)))
    for where, type_ in azapi_types():
        assert _AZAPI_TYPE.match(type_), f"{where}: {type_!r} is not Namespace/type@api-version"
        assert type_ in AZAPI_MIN_VERSION, f"{where}: {type_} not in the list of checked azapi types"
        assert have >= AZAPI_MIN_VERSION[type_], f"{where}: {type_} needs azapi >= {AZAPI_MIN_VERSION[type_]}"
