"""PPO and GRPO under ``accelerate launch`` with two gloo processes give the losses of one process on the same
global batch (as DPO does in ``test_train_distributed``): rank 0 samples and scores, every process prepares the
whole batch, the gradient passes are sharded under DDP (``rlaif.train.rl_dist``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rl_helpers import RULE, prompt_store, shared_tiny_model, write_rules

from rlaif.config import load_settings
from rlaif.store import Store
from rlaif.train.rl_runner import run_rl_command
from rlaif.train.tracking import read_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
STEPS = 3
OPTIONS = {"ppo": ["--batch-size", "8", "--micro-batch-size", "2", "--epochs", "2"],
           "grpo": ["--batch-size", "8", "--micro-batch-size", "2", "--samples", "4"]}
COMMON = ["--max-steps", str(STEPS), "--lr", "1e-3", "--max-new-tokens", "8", "--temperature", "1.0",
          "--save-every", "0", "--no-monitor-judge", "--reward", RULE]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return shared_tiny_model(tmp_path_factory)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def in_process(db: Path, tiny: Path, out: Path, estimator: str):
    """The same run as the command line's, in this process (one process, no accelerate launch)."""
    rollout = {"max_new_tokens": 8, "temperature": 1.0, **({"samples": 4} if estimator == "grpo" else {})}
    values = {"batch_size": 8, "micro_batch_size": 2, "lr": 1e-3, "max_steps": STEPS, "save_every": 0,
              "rollout": rollout, **({"update": {"epochs": 2}} if estimator == "ppo" else {})}
    return run_rl_command(load_settings(db=db, engine="fake", device="cpu"), estimator, out=out, model=str(tiny),
                          rewards=[RULE], options=values, monitor_judge=False, log=lambda _: None)


@pytest.mark.parametrize("estimator", ["ppo", "grpo"])
def test_two_gloo_processes_give_the_losses_of_one(estimator, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_rules(tmp_path)
    db = tmp_path / "rl.duckdb"
    prompt_store(db)
    single = in_process(db, tiny_dir, tmp_path / "one", estimator)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port())]
    cli = ["-m", "rlaif.cli", "--db", str(db), "train", estimator, "--model", str(tiny_dir), "--out",
           str(tmp_path / "two"), *OPTIONS[estimator], *COMMON]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RLAIF_ENGINE": "fake"}
    done = subprocess.run([*launch, *cli], check=False, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    store = Store(db)
    (two,) = store.fetch("SELECT run_id, world_size, status FROM train_runs WHERE world_size = 2")
    assert two["status"] == "completed"

    def metric(run_id: str, name: str) -> list[float]:
        return [v for _, v in read_metrics(store, run_id, name)]

    # the same rollouts (rank 0 sampled them with the same weights and seeds) ...
    assert metric(two["run_id"], "reward") == metric(single.run_id, "reward")
    assert metric(two["run_id"], "response_length") == metric(single.run_id, "response_length")
    # ... and the same update, sharded: only the order of float sums differs
    for name in ["policy_loss", "grad_norm", "kl"] + (["value_loss"] if estimator == "ppo" else ["kl_loss"]):
        one = metric(single.run_id, name)
        assert len(one) == STEPS, name
        assert metric(two["run_id"], name) == pytest.approx(one, rel=1e-4, abs=1e-6), name
    rollouts = store.fetch("SELECT count(*) AS n FROM rl_rollouts WHERE run_id = ?", [two["run_id"]])[0]["n"]
    assert rollouts == 8 * STEPS  # written once, by rank 0
    assert done.stdout.count("saved ") == 1 and done.stdout.count("model: ") == 1
