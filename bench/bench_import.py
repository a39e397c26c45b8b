"""Cold start and deployed size: `import function_app` and each function group, this tree against a
baseline commit (default HEAD~) measured in the same run, plus the size of what requirements.txt
deploys.

Each import runs in a fresh interpreter (`python -X importtime` is not needed: wall time of the
import and the number of modules loaded say what a cold start pays). The baseline tree comes from
`git archive <rev>` into a temporary folder, so both run with the same venv on the same machine.
Figures are medians of `--runs` runs (the machine is shared and noisy: read the ratios).

    python -m bench.bench_import [--baseline HEAD~] [--runs 5]
"""

from __future__ import annotations

import argparse
import io
import json
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUPS = [
    "function_app",
    "functions.health",
    "functions.alerts",
    "functions.policy",
    "functions.approvals",
    "functions.costs",
]
HEAVY = ("pandas", "numpy", "pyarrow", "scipy", "statsmodels")

_PROBE = """
import json, sys, time
t = time.perf_counter()
import {module}
elapsed = time.perf_counter() - t
print(json.dumps({{"seconds": elapsed, "modules": len(sys.modules),
                   "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def measure(tree: Path, module: str, runs: int) -> dict[str, object]:
    samples = []
    last: dict[str, object] = {}
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _PROBE.format(module=module, heavy=HEAVY)],
            cwd=tree,
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tree)},
        )
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
        last = json.loads(out.stdout.strip().splitlines()[-1])
        samples.append(float(last["seconds"]))  # type: ignore[arg-type]
    return {"seconds": statistics.median(samples), "modules": last["modules"], "heavy": last["heavy"]}


def baseline_tree(rev: str, into: Path) -> Path:
    data = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


# -- deployed size: the closure of requirements.txt over the installed distributions -------------


def _requirement_names(text: str) -> list[str]:
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0])
    return names


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: list[str]) -> dict[str, int]:
    """Installed size in bytes of each distribution the requirements pull in (markers evaluated)."""
    from packaging.requirements import Requirement

    sizes: dict[str, int] = {}
    todo = [_norm(n) for n in names]
    while todo:
        name = todo.pop()
        if name in sizes:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sizes[name] = 0
            continue
        sizes[name] = sum((f.size or 0) for f in dist.files or [])
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_norm(req.name))
    return sizes


def size_report(requirements: str) -> tuple[float, list[tuple[str, float]]]:
    sizes = closure(_requirement_names(requirements))
    total = sum(sizes.values()) / 1e6
    top = sorted(((n, s / 1e6) for n, s in sizes.items()), key=lambda x: -x[1])[:8]
    return total, top


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD~", help="git revision to compare with (default HEAD~)")
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per import (median)")
    parser.add_argument("--quick", action="store_true", help="3 runs")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else args.runs
    known = subprocess.run(["git", "rev-parse", "--verify", "--quiet", args.baseline], cwd=ROOT, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="vf-bench-import-") as tmp:
        base = baseline_tree(args.baseline, Path(tmp)) if known.returncode == 0 else None
        if base is None:
            print(f"baseline {args.baseline} is not in this clone (shallow?): figures of this tree only")
        print(f"cold import, median of {runs} fresh interpreters: this tree vs {args.baseline}")
        print(f"{'module':<22} {'now s':>7} {'mods':>5} {'base s':>7} {'mods':>5} {'ratio':>6}  heavy now / base")
        for module in GROUPS:
            now = measure(ROOT, module, runs)
            then = measure(base, module, runs) if base else {"seconds": float("nan"), "modules": 0, "heavy": ["?"]}
            if "error" in now or "error" in then:
                print(f"{module:<22} now={now.get('error', 'ok')} base={then.get('error', 'ok')}")
                continue
            ratio = float(then["seconds"]) / max(float(now["seconds"]), 1e-9)  # type: ignore[arg-type]
            print(
                f"{module:<22} {now['seconds']:>7.2f} {now['modules']:>5} {then['seconds']:>7.2f} {then['modules']:>5}"
                f" {ratio:>5.1f}x  {','.join(now['heavy']) or '-'} / {','.join(then['heavy']) or '-'}"  # type: ignore[arg-type]
            )
        old_req = (base / "requirements.txt").read_text(encoding="utf-8") if base else ""
    new_total, new_top = size_report((ROOT / "requirements.txt").read_text(encoding="utf-8"))
    old_total, _ = size_report(old_req) if old_req else (float("nan"), [])
    print(
        f"\ndeployed dependencies (installed size of the requirements.txt closure): "
        f"{new_total:.0f} MB now vs {old_total:.0f} MB at {args.baseline}"
    )
    print("largest now: " + ", ".join(f"{n} {s:.0f} MB" for n, s in new_top))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
