"""`make bench`: run every benchmark script (`bench/bench_*.py`) in turn, each printing its figures
side by side with the baseline it measures in the same run.

`python -m bench` runs them all; `python -m bench scoring alerts` runs the named ones; extra
arguments after `--` go to each script (for example `-- --quick`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    names, passthrough = argv[:split], argv[split + 1 :]
    available = sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))
    chosen = names or available
    unknown = [n for n in chosen if n not in available]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available}", file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        print(f"\n===== bench {name} =====", flush=True)
        started = time.monotonic()
        rc = subprocess.call([sys.executable, "-m", f"bench.bench_{name}", *passthrough])
        print(f"----- bench {name}: exit {rc} in {time.monotonic() - started:.0f}s", flush=True)
        if rc:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
