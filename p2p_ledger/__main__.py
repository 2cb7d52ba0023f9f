"""`python -m p2p_ledger` runs the command line."""

import sys

from .cli.main import main

sys.exit(main())
