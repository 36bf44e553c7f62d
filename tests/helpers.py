"""Small helpers shared by several test modules (pytest puts tests/ on sys.path: ``from helpers import ...``)."""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refused_before_any_write(argv: list[str], db: Path, message: str, capsys) -> str:
    """Run the CLI on ``argv``: it must exit 2 with one line on stderr starting with ``message``, and leave no
    database at ``db`` (validated before the first write). Returns that line."""
    from rlaif.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert not db.exists()
    return err[0]
