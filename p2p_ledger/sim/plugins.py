"""The system under test, pluggable: replica factories, extra checks, workloads.

A researcher swaps in a modified merge rule, adds an invariant or drives their own
workload without monkeypatching, by naming a callable (`--replica`, `--check`,
`--workload`, or the `World(...)` keywords of the same meaning):

- a *replica factory* `factory(network, store) -> Replica` builds the replica of every
  member each time its node starts (again after a crash, over the same store);
- a *check* `check(world) -> CheckResult` runs once after the run, beside the built-in
  checks, and its result goes into the report (and decides `passed` like theirs);
- a *workload* `async workload(world) -> None` replaces the scenario's payments (and
  its clone or revocations); it runs from time 0 and is cancelled at `duration`.

specs/simulator.md section 10 gives the contract. A spec names a callable as
`package.module:name` (imported with the current directory on the path, as
`python -m` does) or `path/to/file.py:name`. Loading never runs the callable; it
fails with a `PluginError` (a usage error: exit 2 from the command) saying which
option and why, in one line. Errors raised by a plugin while the world runs are the
researcher's code failing, reported as `PluginFailed` (exit 1), also in one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.checking import Verifier
from ..core.ledger import Replica
from ..core.network import NetworkDescriptor
from ..core.records import start_verifying
from ..errors import LocalError, UsageError
from .checks import CheckResult
from .store import SimStore

if TYPE_CHECKING:
    from .world import World

__all__ = ["CheckFn", "PluginError", "PluginFailed", "ReplicaFactory", "WorkloadFn",
           "describe", "load", "run_check"]

ReplicaFactory = Callable[[NetworkDescriptor, SimStore], Replica]
CheckFn = Callable[["World"], CheckResult]
WorkloadFn = Callable[["World"], Awaitable[None]]


class PluginError(UsageError):
    """A `module:name` spec that does not name a callable we can load."""


class PluginFailed(LocalError):
    """A plugin raised, or returned the wrong thing, while the world ran."""


_R = TypeVar("_R")

def _import_module(module: str, option: str, spec: str) -> ModuleType:
    if module.endswith(".py") or os.sep in module or "/" in module:
        path = Path(module)
        if not path.is_file():
            raise PluginError(f"{option} {spec}: no file {module}")
        loader_spec = importlib.util.spec_from_file_location(module, path)
        if loader_spec is None or loader_spec.loader is None:
            raise PluginError(f"{option} {spec}: {module} cannot be imported as Python")
        loaded = importlib.util.module_from_spec(loader_spec)
        sys.modules[module] = loaded  # dataclasses and pickle look modules up by name
        try:
            loader_spec.loader.exec_module(loaded)
        except BaseException as exc:
            del sys.modules[module]
            if not isinstance(exc, Exception):
                raise
            raise PluginError(f"{option} {spec}: importing {module} raised "
                              f"{type(exc).__name__}: {_line(exc)}") from None
        return loaded
    here = os.getcwd()
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        return importlib.import_module(module)
    # Importing runs the researcher's module: whatever it raises (a SyntaxError, a
    # missing dependency, its own bug) is a bad spec, said in one line.
    except Exception as exc:  # noqa: BLE001
        raise PluginError(f"{option} {spec}: cannot import {module}: "
                          f"{type(exc).__name__}: {_line(exc)}") from None
    finally:
        if added:
            sys.path.remove(here)


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else "(no message)"


def load(spec: str, option: str) -> Callable[..., Any]:
    """The callable `spec` names (`module:name`, `file.py:name`; `name` may be
    dotted). `option` (`--replica`...) is for the message."""
    module, sep, name = spec.rpartition(":")
    if not sep or not module or not name:
        raise PluginError(f"{option} {spec}: expected MODULE:NAME or FILE.py:NAME")
    target: Any = _import_module(module, option, spec)
    for part in name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise PluginError(f"{option} {spec}: {module} has no {name}") from None
    if not callable(target):
        raise PluginError(f"{option} {spec}: {name} is a {type(target).__name__}, "
                          "not a callable")
    return target  # type: ignore[no-any-return]


def describe(fn: object) -> str:
    """`module:qualname` of a callable, as the report records which plugin ran."""
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{name}"


def make_replica(factory: ReplicaFactory, network: NetworkDescriptor,
                 store: SimStore, verifier: Verifier = start_verifying) -> Replica:
    """The replica of a member. The shipped Replica checks signatures through the
    simulation's shared checks (`verifier`); a researcher's factory builds its own."""
    if factory is Replica:
        return Replica(network, store, verifier=verifier)
    return _plugin_call(factory, "the replica factory", Replica, (), network, store)


def run_check(check: CheckFn, world: World) -> CheckResult:
    """Run one plugin check after the run; its errors are the plugin's, in one line."""
    return _plugin_call(check, "the check", CheckResult, (LocalError,), world)


def _plugin_call(fn: Callable[..., object], what: str, returns: type[_R],
                 passing: tuple[type[Exception], ...], *args: object) -> _R:
    """`fn(*args)`, a researcher's code: whatever it raises (but `passing`) or a result
    that is not a `returns` is PluginFailed, said in one line."""
    try:
        result = fn(*args)
    except passing:
        raise
    except Exception as exc:  # the researcher's code failing, said so
        raise PluginFailed(f"{what} {describe(fn)} raised {type(exc).__name__}: "
                           f"{_line(exc)}") from exc
    if not isinstance(result, returns):
        raise PluginFailed(f"{what} {describe(fn)} returned a {type(result).__name__}, "
                           f"not a {returns.__name__}")
    return result
