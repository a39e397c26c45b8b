"""What the deployment installs: requirements.txt holds what the deployed code imports, nothing else,
and host.json lets successful invocations reach Application Insights' `requests` table."""

from __future__ import annotations

import ast
import json
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOYED_CODE = [
    ROOT / "function_app.py",
    *sorted((ROOT / "functions").rglob("*.py")),
    *sorted((ROOT / "shared").rglob("*.py")),
]

# Imported by deployed modules but only on paths that never run in Azure, each with why.
DEV_ONLY_IMPORTS = {
    "fakesnow": "embedded warehouse (WAREHOUSE=embedded is refused in Azure)",
    "duckdb": "embedded warehouse",
    "statsmodels": "benchmark baselines (shared/costs/baselines.py, imported by bench/ only)",
    "azure.monitor": "OpenTelemetry export from the CLI and the local host; the Functions host sends telemetry in Azure",
    "devhost": "the local host (`serve`), a development tool left out of the package",
    "croniter": "local host timers",
    "matplotlib": "demo charts",
}
NEVER_DEPLOYED = {"scipy", "statsmodels", "pymsteams", "fakesnow", "duckdb", "pytest", "azure-monitor-opentelemetry"}


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower())
    return names


def imported_modules() -> dict[str, str]:
    """Top-level module (or azure.<pkg>) -> a file importing it, over every deployed module, lazy imports included."""
    out: dict[str, str] = {}
    for path in DEPLOYED_CODE:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                key = ".".join(parts[:2]) if parts[0] == "azure" and len(parts) > 1 else parts[0]
                out.setdefault(key, path.relative_to(ROOT).as_posix())
    return out


def test_dev_only_packages_are_not_deployed():
    deployed = requirement_names(ROOT / "requirements.txt")
    assert not deployed & NEVER_DEPLOYED, sorted(deployed & NEVER_DEPLOYED)


def test_every_third_party_import_of_the_deployed_code_is_in_requirements_txt():
    deployed = requirement_names(ROOT / "requirements.txt")
    providers = metadata.packages_distributions()
    missing = []
    for module, where in imported_modules().items():
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in ("shared", "functions", "function_app", "__future__"):
            continue
        if module in DEV_ONLY_IMPORTS or top in DEV_ONLY_IMPORTS:
            continue
        dists = {d.lower() for d in providers.get(top, [])}
        if top == "azure":  # one namespace, many distributions: match the sub-package
            sub = module.split(".")[1]
            dists = {d for d in deployed if d.startswith("azure-") and sub.replace("_", "-") in d}
            dists |= {"azure-functions"} if sub == "functions" else set()
        if not dists & deployed and not any(_pulled_in(d, deployed) for d in dists):
            missing.append(f"{module} (imported by {where})")
    assert not missing, "imported by deployed code but not installed by requirements.txt: " + ", ".join(missing)


def _pulled_in(dist: str, deployed: set[str]) -> bool:
    """True when `dist` is a dependency of a deployed requirement (e.g. yaml via PyYAML, dateutil via pandas)."""
    seen, todo = set(), list(deployed)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for raw in requires:
            if "extra ==" in raw:
                continue
            todo.append(re.split(r"[<>=!~\[; (]", raw, maxsplit=1)[0].lower())
    return dist in seen


def test_successful_invocations_reach_the_requests_table():
    logging = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))["logging"]
    assert logging["logLevel"].get("Host.Results", logging["logLevel"]["default"]) in ("Information", "Trace", "Debug")
    excluded = logging["applicationInsights"]["samplingSettings"]["excludedTypes"]
    assert "Request" in excluded.split(";")
