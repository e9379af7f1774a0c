"""Command line of the agent: ``python -m agent COMMAND ...`` (see ``--help``)."""

from __future__ import annotations

import sys

from agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
