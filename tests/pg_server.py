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
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("RLAIF_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    return (PG_BIN / "initdb").is_file() and (PG_BIN / "pg_ctl").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(args: list[str], as_root: bool) -> list[str]:
    # runuser needs no password and no tty; it keeps the argument vector intact (no shell quoting).
    return ["runuser", "-u", "postgres", "--", *args] if as_root else args


@dataclass
class PgServer:
    root: Path
    port: int = 0
    dbname: str = "lake"

    @property
    def dsn(self) -> str:
        return f"dbname={self.dbname} host=127.0.0.1 port={self.port} user=postgres"

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(_as_server_user([str(a) for a in args], self._as_root), check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

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

    def stop(self) -> None:
        self._run(PG_BIN / "pg_ctl", "-D", self.root / "pgdata", "-m", "fast", "-w", "-t", "60", "stop", timeout=90)
