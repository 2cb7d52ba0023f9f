"""Build: the package as pure Python, plus its core compiled by mypyc when it can be.

Everything else is in pyproject.toml; this file only adds the compiled core
(specs/build.md). `build_ext` here compiles the modules listed in
p2p_ledger/build.py with mypyc (a build requirement) and a C compiler. When that
cannot be done - no C compiler, mypy missing, a compile error - it says so in one
warning and installs the pure-Python package instead: an install never fails for
want of a compiler. The compiled modules are extension modules beside the `.py`
files, which both builds ship; `p2p-ledger --version` says which build runs.

- `P2P_LEDGER_PURE=1` in the environment forces the pure build.
- Editable installs (`pip install -e`) are always pure: a compiled module in the
  source tree would shadow edits to its `.py` file.
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


def _pure_requested() -> bool:
    return os.environ.get("P2P_LEDGER_PURE", "").strip() not in ("", "0")


def _warn(message: str) -> None:
    print(f"p2p-ledger build: {message}", file=sys.stderr, flush=True)


class _Distribution(Distribution):
    """Always runs build_ext (even for the pure build, which only cleans up)."""

    def has_ext_modules(self) -> bool:
        return True


class CompiledCore(build_ext):
    """build_ext that compiles the core if it can and installs pure Python if not."""

    def finalize_options(self) -> None:
        editable = bool(getattr(self, "editable_mode", False) or self.inplace)
        self._why_pure = ("P2P_LEDGER_PURE is set" if _pure_requested() else
                          "an editable install stays pure Python" if editable else None)
        if self._why_pure is None and not self.distribution.ext_modules:
            self.distribution.ext_modules = self._mypyc_extensions()
        super().finalize_options()

    def _mypyc_extensions(self) -> list[Any]:
        """mypyc's C sources and extensions, or none (with a warning) if it fails."""
        try:
            from mypyc.build import mypycify

            paths = [str(Path(*name.split(".")).with_suffix(".py"))
                     for name in COMPILED_MODULES]
            # The build environment holds mypy, not the package's dependencies (trio,
            # psycopg, ...): modules outside the list are read for their types only,
            # and a missing third-party package is Any, as pyproject's mypy config
            # already says for cbor2, msgpack and nacl. The listed modules are checked
            # in full (mypy strict, from pyproject.toml).
            options = ["--follow-imports=silent", "--ignore-missing-imports"]
            return list(mypycify([*options, *paths], opt_level="3", group_name=GROUP))
        # Anything at all: the install must not fail for want of the compiled core.
        except (Exception, SystemExit) as exc:  # noqa: BLE001 (mypyc exits on type errors)
            self._why_pure = f"mypyc could not translate the core ({exc!r})"
            return []

    def run(self) -> None:
        if self._why_pure is None:
            try:
                super().run()
            # Anything at all: a missing compiler, a compile or link error, a tool's crash.
            except (Exception, SystemExit) as exc:  # noqa: BLE001
                self._why_pure = f"the C compiler failed ({exc!r})"
        if self._why_pure is not None:
            self._remove_compiled()
            _warn(f"installing pure Python: {self._why_pure}")

    def _remove_compiled(self) -> None:
        """Every compiled module of the core, whether from this run or an older one,
        out of the build directory: a pure build is all pure."""
        self.extensions = []
        names = [*COMPILED_MODULES, GROUP + "__mypyc"]
        for name in names:
            built = Path(self.build_lib, self.get_ext_filename(name))
            for stale in built.parent.glob(Path(name.split(".")[-1]).name + ".*"):
                if stale.suffix in (".so", ".pyd"):
                    stale.unlink()


setup(distclass=_Distribution, cmdclass={"build_ext": CompiledCore})
