"""`rlaif schedule` against a real Prefect server on loopback: deployments with cron schedules, a process work
pool and a worker; a run triggered through the API lands in DuckDB with its Prefect flow-run id.

The Prefect server and worker are real processes with their own PREFECT_HOME under tmp_path, bound to
127.0.0.1, every wait bounded, and stopped at the end. One server start-up: about 20 s on two quiet cores, 60 s
on two busy ones.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import free_port

from rlaif.scheduling import api, healthy
from rlaif.store import Store

pytestmark = pytest.mark.prefect
ROOT = Path(__file__).resolve().parents[1]


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLAIF_", "PREFECT_"))}
    env.update(PYTHONPATH=str(ROOT), PREFECT_HOME=str(home), RLAIF_CONFIG=str(home / "absent.toml"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_WORKER_QUERY_SECONDS="1",
               RLAIF_CACHE_DIR=str(home / "cache"), **extra)
    return env


class Lines:
    """A child's stdout, read on a thread, so waits for a line are bounded."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.seen, self._q = proc, [], queue.Queue()
        threading.Thread(target=lambda: [self._q.put(line) for line in proc.stdout], daemon=True).start()

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, "exited early:\n" + "".join(self.seen)
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {timeout}s:\n" + "".join(self.seen))


def interrupt(proc: subprocess.Popen, timeout: float = 40) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def trigger_and_wait(url: str, deployment_id: str, timeout: float = 150) -> tuple[str, str | None]:
    flow_run = api(url, f"/deployments/{deployment_id}/create_flow_run", {})
    deadline, state = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        state = api(url, f"/flow_runs/{flow_run['id']}")["state"]["type"]
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(0.5)
    return flow_run["id"], state


def test_schedule_serves_deploys_and_a_triggered_run_lands_with_its_flow_run_id(tmp_path) -> None:
    home, db, port = tmp_path / "prefect-home", tmp_path / "scheduled.duckdb", free_port()
    url = f"http://127.0.0.1:{port}/api"
    # No PREFECT_API_URL: rlaif schedule starts a server on 127.0.0.1:port (PREFECT_HOME in tmp_path).
    proc = subprocess.Popen([sys.executable, "-m", "rlaif.cli", "--db", str(db), "--engine", "fake", "schedule",
                             "--pool", "test-pool", "--limit", "3", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env_for(home))
    out = Lines(proc)
    try:
        out.wait_for(f"starting a Prefect server on 127.0.0.1:{port}", 60)
        assert f"Prefect UI: http://127.0.0.1:{port}  (API {url})" in out.wait_for("Prefect UI:", 150)
        out.wait_for("Ctrl-C stops", 60)
        deployment = api(url, "/deployments/name/rlaif-sl-cai/nightly-generation")
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 2 * * *"]
        assert deployment["work_pool_name"] == "test-pool" and deployment["parameters"]["options"]["limit"] == 3
        assert deployment["parameters"]["kind"] == "sft" and deployment["parameters"]["options"]["judge"] is True
        assert deployment["parameters"]["settings_overrides"] == {"db": str(db), "engine": "fake"}

        # Against the standing server (PREFECT_API_URL): no server start-up, the deployment is updated in place.
        again = subprocess.run([sys.executable, "-m", "rlaif.cli", "--db", str(db), "--engine", "fake", "schedule",
                                "--pool", "test-pool", "--limit", "2", "--no-worker"], capture_output=True,
                               text=True, env=env_for(home, PREFECT_API_URL=url), timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "starting a Prefect server" not in again.stdout and "no worker here" in again.stdout
        updated = api(url, "/deployments/name/rlaif-sl-cai/nightly-generation")
        assert updated["id"] == deployment["id"] and updated["parameters"]["options"]["limit"] == 2

        flow_run_id, state = trigger_and_wait(url, deployment["id"])
        assert state == "COMPLETED", "".join(out.seen)
        assert api(url, "/work_pools/test-pool/workers/filter", {}), "the worker registered with the pool"
    finally:
        code = interrupt(proc)
    assert code == 0, "".join(out.seen)
    assert not healthy(url), "the server rlaif schedule started stops with it"

    store = Store(db)
    (run,) = store.fetch("SELECT * FROM runs")
    assert run["prefect_flow_run_id"] == flow_run_id and run["status"] == "completed" and run["kind"] == "sft"
    assert store.fetch("SELECT count(DISTINCT prompt_id) AS n FROM generations WHERE run_id = ?",
                       [run["run_id"]])[0]["n"] == 2
