"""``rlaif schedule``: a Prefect server (the configured one, or a local one on 127.0.0.1), a process work pool,
the project's deployments (``flows/deployments.py``) and a worker that runs them.

A standing server named by ``PREFECT_API_URL`` is used as it is; without one, a local server is started as a
child process on 127.0.0.1 and kept for as long as ``rlaif schedule`` runs (its SQLite database lives under
``PREFECT_HOME``, so deployments and run history survive restarts). The worker is a child process too. Ctrl-C
stops both children, each within a bounded wait. Every wait here is bounded; telemetry is off in every child
(``rlaif.environment``).

Prefect is imported inside the functions that need it; the servers and workers are ``python -m prefect``
processes, so they run with this interpreter's Prefect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif.environment import child_environment
from rlaif.errors import ConfigError, UserError

DEFAULT_POOL = "rlaif-local"
STOP_WAIT_S = 15.0  # a child asked to stop gets this long before it is killed


class ScheduleError(UserError):
    """The Prefect server or worker could not be started or reached in time."""

    exit_code = 5


@dataclass
class Scheduled:
    """What ``start`` set up: the API and UI addresses, the deployments, and the child processes it owns."""

    api_url: str
    ui_url: str
    deployments: list[tuple[Any, str | None]] = field(default_factory=list)
    children: list[subprocess.Popen] = field(default_factory=list)


def api(api_url: str, path: str, body: dict | None = None, timeout: float = 10.0) -> Any:
    """One call of a Prefect server's REST API: GET ``{api_url}{path}``, or POST ``body`` as JSON; the decoded reply.

    Raises ``OSError`` (``URLError``, ``HTTPError`` for a 4xx/5xx) or ``ValueError`` (a reply that is
    not JSON).
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(api_url.rstrip("/") + path, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect server answers ``true`` at ``{api_url}/health`` within ``timeout``."""
    try:
        return api(api_url, "/health", timeout=timeout) is True
    except (OSError, ValueError):
        return False


def wait_healthy(api_url: str, wait_s: float, child: subprocess.Popen | None = None, poll_s: float = 0.25) -> None:
    """Poll ``{api_url}/health`` until it answers ``true``, at most ``wait_s``; a child that exits ends the wait."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if healthy(api_url):
            return
        if child is not None and child.poll() is not None:
            raise ScheduleError(f"the Prefect server exited with code {child.returncode} before it answered at "
                                f"{api_url}; its log: {getattr(child, 'log_path', '?')}")
        time.sleep(poll_s)
    raise ScheduleError(f"no Prefect server answered at {api_url} within {wait_s:g}s")


def ui_url(api_url: str) -> str:
    return api_url.rstrip("/").removesuffix("/api")


def start_server(port: int, log_dir: Path, wait_s: float) -> tuple[str, subprocess.Popen]:
    """``prefect server start`` on 127.0.0.1:``port`` as a child process; returns its API URL once healthy."""
    api_url = f"http://127.0.0.1:{port}/api"
    if healthy(api_url):
        raise ScheduleError(f"a Prefect server already answers at {api_url}; "
                            f"use it with PREFECT_API_URL={api_url}, or pick another --port")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"prefect-server-{port}.log"
    with log_path.open("ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                  "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                 env=child_environment(), start_new_session=True)
    child.log_path = log_path  # type: ignore[attr-defined]
    try:
        wait_healthy(api_url, wait_s, child)
    except BaseException:
        stop(child)
        raise
    return api_url, child


def ensure_pool(api_url: str, pool: str) -> str:
    """Create a process work pool named ``pool`` unless one exists; returns its type."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def go() -> str:
        async with get_client() as client:
            try:
                return (await client.read_work_pool(pool)).type
            except ObjectNotFound:
                await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
                return "process"

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return asyncio.run(go())


def start_worker(api_url: str, pool: str, wait_s: float, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``prefect worker start`` on ``pool`` as a child process (output to ours); returns once it polls the API."""
    child = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
                             env=child_environment({"PREFECT_API_URL": api_url, **(env or {})}),
                             start_new_session=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise ScheduleError(f"the Prefect worker for pool {pool!r} exited with code {child.returncode}")
        if _workers(api_url, pool):
            return child
        time.sleep(0.5)
    stop(child)
    raise ScheduleError(f"the Prefect worker for pool {pool!r} did not reach {api_url} within {wait_s:g}s")


def _workers(api_url: str, pool: str) -> list[dict]:
    try:
        return api(api_url, f"/work_pools/{pool}/workers/filter", {}, timeout=5)
    except (OSError, ValueError):
        return []


def stop(child: subprocess.Popen, wait_s: float = STOP_WAIT_S) -> None:
    """Ask a child (and its process group) to stop; kill it if it has not within ``wait_s``."""
    import signal

    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        child.terminate()
    try:
        child.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=wait_s)


def start(settings_overrides: dict[str, Any], *, pool: str = DEFAULT_POOL, port: int = 4200,
          worker: bool = True, extra: dict[str, dict[str, Any]] | None = None, log_dir: Path,
          server_wait_s: float = 90.0, worker_wait_s: float = 60.0,
          log: Callable[[str], None] = print) -> Scheduled:
    """Server (standing or started), pool, deployments and (unless ``worker=False``) a worker."""
    from rlaif.flows.deployments import deploy_all

    standing = os.environ.get("PREFECT_API_URL")
    scheduled = Scheduled(api_url="", ui_url="")
    try:
        if standing:
            wait_healthy(standing, server_wait_s)
            scheduled.api_url = standing
        else:
            log(f"starting a Prefect server on 127.0.0.1:{port} (log in {log_dir})")
            scheduled.api_url, server = start_server(port, log_dir, server_wait_s)
            scheduled.children.append(server)
        scheduled.ui_url = ui_url(scheduled.api_url)
        kind = ensure_pool(scheduled.api_url, pool)
        log(f"work pool {pool!r} ({kind})")
        scheduled.deployments = deploy_all(scheduled.api_url, pool, settings_overrides, extra)
        if worker:
            scheduled.children.append(start_worker(scheduled.api_url, pool, worker_wait_s))
    except BaseException:
        for child in reversed(scheduled.children):
            stop(child)
        raise
    return scheduled


def describe(scheduled: Scheduled) -> list[str]:
    lines = []
    for declared, deployment_id in scheduled.deployments:
        if deployment_id is None:
            missing = ", ".join(f"flows/{f}" for f in declared.needs)
            lines.append(f"  {declared.name}: not deployed, it needs {missing}, not all in this rlaif yet")
        else:
            lines.append(f"  {declared.name}: cron '{declared.cron}' (UTC), runs {declared.entrypoint}")
    return lines


def wait_children(scheduled: Scheduled, log: Callable[[str], None] = print) -> int:
    """Block until Ctrl-C or a child exits; then stop every child (bounded). Returns the exit code."""
    code = 0
    try:
        while all(child.poll() is None for child in scheduled.children):
            time.sleep(0.5)
        exited = next(c for c in scheduled.children if c.poll() is not None)
        log(f"a Prefect process (pid {exited.pid}) exited with code {exited.returncode}; stopping the others")
        code = exited.returncode or 1
    except KeyboardInterrupt:
        log("stopping the Prefect processes this command started")
    finally:
        for child in reversed(scheduled.children):
            stop(child)
    return code


def parse_port(port: int) -> int:
    if not 1024 <= port <= 65535:
        raise ConfigError(f"--port must be between 1024 and 65535, got {port}")
    return port
