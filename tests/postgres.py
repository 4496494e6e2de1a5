"""A PostgreSQL server of a test's own, on a unix socket in a temporary directory.

For tests that stop, crash and restart the database under a running server process, which the
suite's shared PostgreSQL must never suffer. The binaries are the machine's (Debian's
``/usr/lib/postgresql/<version>/bin``); as root, the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bindir() -> Path:
    versions = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    found = sorted(versions, key=lambda path: int(path.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    assert pg_ctl, "PostgreSQL's server binaries (pg_ctl, initdb) are needed for this test"
    return Path(pg_ctl).parent


class PrivatePostgres:
    """initdb, start, stop (fast or immediate, i.e. a crash), start again; one database."""

    def __init__(self) -> None:
        self.bin = _bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="ds-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:  # initdb refuses to run as root
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if completed.returncode != 0:
            raise RuntimeError(f"{tool} failed: {completed.stdout}{completed.stderr}{self.logs()}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def start(self) -> PrivatePostgres:
        options = f"-c listen_addresses='' -k {self.dir} -c fsync=off -c max_connections=60"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown; ``immediate``: the server dies as in a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@{str(self.dir).replace('/', '%2F')}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name`` with the app's tables (``migrate``); returns its URL."""
        self._run("createdb", "-h", str(self.dir), "-U", "postgres", name)
        env = {**os.environ, "DATABASE_URL": self.url(name)}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=120,
        )
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
