"""The deterministic simulator: many real nodes in one process on simulated time.

`World(params).run()` runs one scenario (world.py, its members' lifecycle in
members.py); `write_report` writes its report (report.py); `SCENARIOS` and
`params_for` name the scenarios (scenarios.py). The command is `p2p-ledger simulate`;
specs/simulator.md describes the models and checks.
This package imports trio; the core and protocol layers never import it.
"""

from __future__ import annotations

from .scenarios import SCENARIOS, Faults, SimParams, params_for

__all__ = ["SCENARIOS", "Faults", "SimParams", "params_for"]
