"""The azurerm provider schema, read offline from the jsii assembly of `cdktn-provider-azurerm`.

Providers cannot be downloaded here, so `terraform validate` cannot run. The PyPI package
`cdktn-provider-azurerm` (pinned in requirements-dev.txt; 18.9.0 = azurerm 5.10.0) ships the whole
provider schema as a jsii assembly (`_jsii/*.jsii.tgz` -> `package/.jsii`): each resource or data
source `azurerm_x_y` is a class whose docs name it, with a `XYConfig` struct whose properties are
its arguments (camelCase, `optional` flag, Terraform name in the docs link anchor); nested blocks
are properties typed with another struct.

The extracted schema (a few MB of JSON) is cached under `.valueflow/provider-schema/`, keyed by
the package version, so only the first run pays for unpacking the 80 MB assembly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import tarfile
from pathlib import Path
from typing import Any

PACKAGE = "cdktn-provider-azurerm"
MODULE = "cdktn_provider_azurerm"
ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = ROOT / ".valueflow" / "provider-schema"

_REPRESENTS = re.compile(r"/providers/hashicorp/azurerm/([0-9.]+)/docs/(resources|data-sources)/\S+ (azurerm_\w+)\}")
_ANCHOR = re.compile(r"#(\w+) ")


def package_version() -> str:
    return importlib.metadata.version(PACKAGE)


def _assembly_path() -> Path:
    spec = importlib.util.find_spec(MODULE)  # locates the package without importing it (no jsii runtime)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{PACKAGE} is not installed: pip install -r requirements-dev.txt")
    folder = Path(next(iter(spec.submodule_search_locations))) / "_jsii"
    found = sorted(folder.glob("*.jsii.tgz"))
    if not found:
        raise FileNotFoundError(f"no jsii assembly in {folder}")
    return found[0]


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def _struct_of(type_ref: dict[str, Any]) -> str | None:
    """The fqn of the nested block struct a property is typed with, if any."""
    if "fqn" in type_ref:
        fqn = type_ref["fqn"]
        return None if fqn.startswith("cdktn.") else fqn
    if "collection" in type_ref:
        return _struct_of(type_ref["collection"]["elementtype"])
    if "union" in type_ref:
        for t in type_ref["union"]["types"]:
            found = _struct_of(t)
            if found:
                return found
    return None


def _arguments(struct: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for prop in struct.get("properties", []):
        remarks = prop.get("docs", {}).get("remarks", "")
        anchor = _ANCHOR.search(remarks)
        name = anchor.group(1) if anchor else _snake(prop["name"])
        out[name] = {"optional": bool(prop.get("optional")), "block": _struct_of(prop["type"])}
    return out


def extract(assembly: dict[str, Any]) -> dict[str, Any]:
    """{"provider_version", "resource": {type: struct}, "data": {type: struct}, "structs": {fqn: {arg: {...}}}}."""
    types = assembly["types"]
    out: dict[str, Any] = {"provider_version": "", "resource": {}, "data": {}, "structs": {}}
    for fqn, t in types.items():
        if t.get("kind") != "class":
            continue
        m = _REPRESENTS.search(t.get("docs", {}).get("summary", ""))
        if not m:
            continue
        version, kind, tf_type = m.groups()
        out["provider_version"] = version
        config = f"{fqn}Config"
        if config not in types:
            continue
        out["resource" if kind == "resources" else "data"][tf_type] = config
    wanted = list(out["resource"].values()) + list(out["data"].values())
    while wanted:
        fqn = wanted.pop()
        if fqn in out["structs"] or fqn not in types:
            continue
        args = _arguments(types[fqn])
        out["structs"][fqn] = args
        wanted.extend(a["block"] for a in args.values() if a["block"])
    return out


def load_schema() -> dict[str, Any]:
    """The extracted schema, from the cache or (first run) from the installed package."""
    version = package_version()
    cache = CACHE_DIR / f"azurerm-{version}.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    with tarfile.open(_assembly_path()) as tar:
        member = tar.extractfile("package/.jsii")
        if member is None:
            raise FileNotFoundError("package/.jsii missing from the jsii tarball")
        assembly = json.load(member)
    schema = extract(assembly)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(schema), encoding="utf-8")
    tmp.replace(cache)
    return schema
