"""Build: the package as pure Python; its core compiled by mypyc only when asked.

Everything else is in pyproject.toml; this file only adds the opt-in compiled core
(specs/build.md). By default nothing is compiled and nothing extra is installed to
build (the build requirements are setuptools and wheel). With `P2P_LEDGER_COMPILE=1`
in the environment, `build_ext` compiles the modules listed in p2p_ledger/build.py
with mypyc and a C compiler. mypy (which ships mypyc) must then be importable in the
build environment, which pip's isolated build does not provide:

    pip install mypy setuptools wheel
    P2P_LEDGER_COMPILE=1 pip install --no-build-isolation .

A compile that was asked for and cannot be done (mypy missing, a type error, no C
compiler, a compile or link error) fails the install with the reason: whoever asked
for the compiled build does not get the pure one without knowing. `p2p-ledger
--version` says which build runs.

- Editable installs (`pip install -e`) with `P2P_LEDGER_COMPILE=1` fail the same way:
  a compiled module in the source tree would shadow edits to its `.py` file.
- Whatever is not compiled is removed from the build directory, so a pure build after
  a compiled one in the same checkout never ships the old extension modules.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
COMPILED_MODULES: tuple[str, ...] = runpy.run_path(
    str(HERE / "p2p_ledger" / "build.py"))["COMPILED_MODULES"]
# mypyc's runtime library is shared by the compiled modules: one extension module of
# this name beside the package (p2p_ledger__mypyc...so).
GROUP = "p2p_ledger"
HOW = ("pip install mypy setuptools wheel && "
       "P2P_LEDGER_COMPILE=1 pip install --no-build-isolation .")


def _compile_requested() -> bool:
    return os.environ.get("P2P_LEDGER_COMPILE", "").strip() not in ("", "0")


class CompileFailed(SystemExit):
    """The compiled build was asked for and could not be made: the install fails."""

    def __init__(self, why: str) -> None:
        super().__init__(f"p2p-ledger build: P2P_LEDGER_COMPILE=1 but {why}. "
                         f"Unset P2P_LEDGER_COMPILE for the pure-Python package; "
                         f"to compile: {HOW}")


class _Distribution(Distribution):
    """Always runs build_ext (the pure build's only cleans stale extension modules)."""

    def has_ext_modules(self) -> bool:
        return True


class CompiledCore(build_ext):
    """build_ext that compiles the core when P2P_LEDGER_COMPILE=1, or nothing."""

    def finalize_options(self) -> None:
        self._compile = _compile_requested()
        if self._compile and bool(getattr(self, "editable_mode", False) or self.inplace):
            raise CompileFailed("an editable install is never compiled (a compiled "
                                "module would shadow edits to its .py file)")
        if self._compile and not self.distribution.ext_modules:
            self.distribution.ext_modules = self._mypyc_extensions()
        super().finalize_options()

    def _mypyc_extensions(self) -> list[Any]:
        """mypyc's C sources and extensions; CompileFailed when it cannot make them."""
        try:
            from mypyc.build import mypycify
        except ImportError as exc:
            raise CompileFailed(f"mypyc cannot be imported ({exc}): pip's isolated "
                                "build environment has no mypy") from exc
        paths = [str(Path(*name.split(".")).with_suffix(".py"))
                 for name in COMPILED_MODULES]
        # The build environment need not hold the package's dependencies (trio,
        # psycopg, ...): modules outside the list are read for their types only, and a
        # missing third-party package is Any, as pyproject's mypy config already says for
        # cbor2, msgpack and nacl. The listed modules are checked in full (mypy strict,
        # from pyproject.toml).
        options = ["--follow-imports=silent", "--ignore-missing-imports"]
        try:
            return list(mypycify([*options, *paths], opt_level="3", group_name=GROUP))
        except SystemExit as exc:  # mypyc exits after printing the type errors
            raise CompileFailed(f"mypyc could not translate the core (exit {exc.code})") \
                from exc

    def run(self) -> None:
        if not self._compile:
            self._remove_compiled()
            return
        try:
            super().run()
        # Setuptools reports a missing compiler or a compile/link error as one of its
        # own error classes (CompileError, LinkError, PlatformError...): all Exceptions.
        except Exception as exc:
            raise CompileFailed(f"the C compiler failed ({exc!r})") from exc
        print(f"p2p-ledger build: compiled {len(COMPILED_MODULES)} modules with mypyc",
              file=sys.stderr, flush=True)

    def _remove_compiled(self) -> None:
        """Every compiled module of the core from an older run out of the build
        directory: a pure build is all pure."""
        self.extensions = []
        names = [*COMPILED_MODULES, GROUP + "__mypyc"]
        for name in names:
            built = Path(self.build_lib, self.get_ext_filename(name))
            for stale in built.parent.glob(Path(name.split(".")[-1]).name + ".*"):
                if stale.suffix in (".so", ".pyd"):
                    stale.unlink()


setup(distclass=_Distribution, cmdclass={"build_ext": CompiledCore})
