"""Which build of the core is running: compiled by mypyc, or pure Python.

`setup.py` compiles the modules in `COMPILED_MODULES` with mypyc when it can (a C
compiler and mypy at install time) and installs the pure-Python package otherwise
(specs/build.md). Both builds ship the same `.py` files; a compiled module is an
extension module beside its source, which Python's import system prefers. So which
build runs is told by where each module was loaded from, not by a flag written at
build time that could disagree with it: `build_kind()` says "compiled" when every
listed module is an extension module, "pure Python" when none is, and names the
compiled ones otherwise (a broken install). `p2p-ledger --version` prints it.

`setup.py` reads `COMPILED_MODULES` from this file without importing the package,
so this module imports only the standard library, at the top level only.
"""

from __future__ import annotations

import importlib
import importlib.machinery

__all__ = ["COMPILED_MODULES", "build_kind", "compiled_modules"]

# The core's hot path (issue 15): records, the replica and its rules, the stores'
# common part and SQLite store (with the row codecs it shares), ids, money, clocks,
# and the sync frames. All pass mypy strict; mypyc compiles them as they are
# (specs/build.md lists what it needed).
COMPILED_MODULES = (
    "p2p_ledger.core.records",
    "p2p_ledger.core.ledger",
    "p2p_ledger.core.rules",
    "p2p_ledger.core.frontier",
    "p2p_ledger.core.results",
    "p2p_ledger.core.checking",
    "p2p_ledger.core.pending",
    "p2p_ledger.core.store",
    "p2p_ledger.core.ids",
    "p2p_ledger.core.money",
    "p2p_ledger.core.hlc",
    "p2p_ledger.storage.sqlite",
    "p2p_ledger.storage.sqlite_schema",
    "p2p_ledger.storage.rows",
    "p2p_ledger.protocol.compact",
    "p2p_ledger.protocol.frames",
)

_EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def compiled_modules() -> list[str]:
    """The modules of `COMPILED_MODULES` that were loaded from an extension module."""
    compiled = []
    for name in COMPILED_MODULES:
        path = getattr(importlib.import_module(name), "__file__", None) or ""
        if path.endswith(_EXTENSION_SUFFIXES):
            compiled.append(name)
    return compiled


def build_kind() -> str:
    """"compiled", "pure Python", or which modules are compiled when only some are."""
    compiled = compiled_modules()
    if len(compiled) == len(COMPILED_MODULES):
        return "compiled"
    if not compiled:
        return "pure Python"
    return "partly compiled (" + ", ".join(compiled) + ")"
