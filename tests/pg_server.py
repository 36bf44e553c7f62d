"""A throwaway PostgreSQL server for the lake tests: Debian's binaries, a temporary data directory, loopback only.

PostgreSQL refuses to run as root, so under root the data directory is handed to the ``postgres`` user and the
server runs as that user; otherwise it runs as the current user. ``start`` waits (bounded) until it accepts
connections; ``stop`` shuts it down fast and removes nothing the caller did not create.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


def _pg_bin() -> Path:
    """Debian's newest installed PostgreSQL (``/usr/lib/postgresql/N/bin``), or ``RLAIF_PG_BIN``."""
    if os.environ.get("RLAIF_PG_BIN"):
        return Path(os.environ["RLAIF_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


def require() -> None:
    """Skip where PostgreSQL is missing, as the browser test does for chromium; on CI (CI set) fail instead."""
    import pytest

    if not ((PG_BIN / "initdb").is_file() and (PG_BIN / "pg_ctl").is_file()):
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is missing on CI ({PG_BIN}): ./setup.sh --dev installs it")
        pytest.skip(f"no PostgreSQL at {PG_BIN} (./setup.sh --dev installs Debian's package where apt is available)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(args: list[str], as_root: bool) -> list[str]:
    # runuser needs no password and no tty; it keeps the argument vector intact (no shell quoting).
    return ["runuser", "-u", "postgres", "--", *args] if as_root else args


@dataclass
class PgServer:
    """``PgServer().start()``; its folder is a fresh one under the system temp dir (pytest's own temp folders are
    private to root, and the ``postgres`` user could not enter them), removed by ``stop``."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rlaif-pg-")))
    port: int = 0
    dbname: str = "lake"

    @property
    def dsn(self) -> str:
        return f"dbname={self.dbname} host=127.0.0.1 port={self.port} user=postgres"

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(_as_server_user([str(a) for a in args], self._as_root), timeout=timeout,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[-800:]}")

    def start(self) -> PgServer:
        data = self.root / "pgdata"
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self.port = self.port or _free_port()
        self._run(PG_BIN / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8")
        opts = f"-k {self.root} -c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off"
        self._run(PG_BIN / "pg_ctl", "-D", data, "-o", opts, "-l", self.root / "server.log", "-w", "-t", "60",
                  "start", timeout=90)
        self._run(PG_BIN / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.dbname)
        return self

    def create_db(self, name: str) -> str:
        """A new empty database on this server; returns its libpq DSN."""
        self._run(PG_BIN / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"dbname={name} host=127.0.0.1 port={self.port} user=postgres"

    def stop(self) -> None:
        try:
            self._run(PG_BIN / "pg_ctl", "-D", self.root / "pgdata", "-m", "fast", "-w", "-t", "60", "stop",
                      timeout=90)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
