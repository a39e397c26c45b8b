"""Entry point of `python -m shared.cli`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from shared.cli import alerts, core, costs, demands, dora, policy
from shared.errors import ValueFlowError

# one module per capability, each with register(subparsers)
COMMAND_MODULES = [core, alerts, costs, policy, demands, dora]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.cli",
        description="ValueFlow Automations operator CLI. Settings come from the environment, then local.settings.json.",
    )
    subparsers = parser.add_subparsers(dest="group", metavar="<group>", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ValueFlowError as err:
        print(f"error: {err.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
