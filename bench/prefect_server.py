"""Time to finish a tiny flow run: with a temporary Prefect server, against a standing one, and through a deployment.

(a) No ``PREFECT_API_URL``: the process starts Prefect's temporary local server, runs the flow, stops it.
(b) ``PREFECT_API_URL`` names a standing server (started once by this script, on 127.0.0.1): no start-up.
(c) The same flow through the nightly deployment: ``rlaif schedule``'s process pool and worker, a run created
    through the API, timed from the request to the COMPLETED state (the worker polls every second here;
    Prefect's default is 10 s, which adds up to that much).

Each of (a) and (b) is a fresh ``python`` process running ``rlaif.flows.sl_cai.sl_cai_flow`` on one built-in prompt
with the fake engine, timed end to end (interpreter start included) and from the flow call to its return.
They alternate, ``--repeats`` times each, so the machine's load falls on both alike.

    python bench/prefect_server.py --repeats 3 --out-json /tmp/prefect-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlaif.scheduling import api, healthy

ROOT = Path(__file__).resolve().parents[1]

TINY = """
import json, sys, time
t0 = time.monotonic()
from rlaif.environment import prepare_environment
prepare_environment()
import rlaif.flows.sl_cai
from rlaif.options import RunOptions
from rlaif.prompts import demo_prompts_path
options = RunOptions.parse(prompts=str(demo_prompts_path()), limit=1, constitution="example", max_tokens=16)
t1 = time.monotonic()
summary = rlaif.flows.sl_cai.sl_cai_flow(options=options, settings_overrides={"db": sys.argv[1], "engine": "fake"},
                                   show_progress=False)
t2 = time.monotonic()
print(json.dumps({"imports_s": t1 - t0, "flow_s": t2 - t1, "prompts": summary["prompts"]}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env_for(home: Path, api_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLAIF_", "PREFECT_"))}
    env.update(PYTHONPATH=str(ROOT), PREFECT_HOME=str(home), RLAIF_CONFIG=str(home / "absent.toml"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_LOGGING_LEVEL="WARNING",
               PREFECT_WORKER_QUERY_SECONDS="1", RLAIF_CACHE_DIR=str(home / "cache"))
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def tiny_run(work: Path, home: Path, api_url: str | None, n: int) -> dict:
    db = work / f"tiny-{'standing' if api_url else 'temporary'}-{n}.duckdb"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", TINY, str(db)], capture_output=True, text=True,
                          env=env_for(home, api_url), timeout=600)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return {"wall_s": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def deployment_runs(url: str, home: Path, work: Path, repeats: int) -> list[float]:
    """(c): rlaif schedule (process pool + worker) against the standing server; seconds per triggered run."""
    env = env_for(home, url)
    proc = subprocess.Popen([sys.executable, "-m", "rlaif.cli", "--db", str(work / "deployed.duckdb"), "--engine",
                             "fake", "schedule", "--pool", "bench-pool", "--limit", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    times = []
    try:
        deadline = time.monotonic() + 180
        for line in proc.stdout:
            if "Ctrl-C stops" in line or time.monotonic() > deadline:
                break
        deployment = api(url, "/deployments/name/rlaif-sl-cai/nightly-generation")
        for _ in range(repeats):
            started = time.monotonic()
            run = api(url, f"/deployments/{deployment['id']}/create_flow_run", {})
            while time.monotonic() - started < 300:
                state = api(url, f"/flow_runs/{run['id']}")["state"]["type"]
                if state in ("COMPLETED", "FAILED", "CRASHED"):
                    break
                time.sleep(0.2)
            if state != "COMPLETED":
                raise RuntimeError(f"deployment run ended {state}")
            times.append(time.monotonic() - started)
    finally:
        proc.send_signal(2)
        proc.wait(timeout=60)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()
    result: dict = {"load_before": os.getloadavg(), "cpus": os.cpu_count(), "machine": platform.platform()}
    with tempfile.TemporaryDirectory(prefix="rlaif-prefect-bench-") as tmp:
        work = Path(tmp)
        home = work / "home"
        url = f"http://127.0.0.1:{free_port()}/api"
        port = url.rsplit(":", 1)[1].split("/")[0]
        started = time.monotonic()
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=env_for(home, None), start_new_session=True)
        try:
            while not healthy(url):
                if time.monotonic() - started > 180 or server.poll() is not None:
                    raise RuntimeError("the standing server did not start")
                time.sleep(0.2)
            result["standing_server_start_s"] = time.monotonic() - started
            runs: dict[str, list[dict]] = {"temporary": [], "standing": []}
            for n in range(args.repeats):
                runs["temporary"].append(tiny_run(work, home, None, n))
                runs["standing"].append(tiny_run(work, home, url, n))
                print(json.dumps({k: v[-1] for k, v in runs.items()}), flush=True)
            result["runs"] = runs
            result["deployment_s"] = deployment_runs(url, home, work, args.repeats)
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
    result["load_after"] = os.getloadavg()
    for way in ("temporary", "standing"):
        result[f"{way}_wall_median_s"] = statistics.median(r["wall_s"] for r in result["runs"][way])
        result[f"{way}_flow_median_s"] = statistics.median(r["flow_s"] for r in result["runs"][way])
    result["deployment_median_s"] = statistics.median(result["deployment_s"])
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if args.out_json:
        args.out_json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
