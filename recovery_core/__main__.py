"""`python -m recovery_core` is the `recovery` command."""

from recovery_core.cli import run

run()
