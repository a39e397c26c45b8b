"""The operator CLI: `python -m shared.cli <group> <command>`.

Each capability adds one module here with `register(subparsers)`; `__main__` lists the modules.
A command returns an exit code; project errors print one clear line and exit 2.
"""
