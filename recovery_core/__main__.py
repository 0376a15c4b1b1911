"""`python -m recovery_core` is the `recovery` command."""

from recovery_core.cli import main

raise SystemExit(main())
