"""`python -m p2p_ledger` runs the command line (through its entry point, as the
`p2p-ledger` command does: cli/entry.py)."""

import sys

from .cli.entry import main

sys.exit(main())
