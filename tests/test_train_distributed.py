"""Training across processes, for real: a run killed with SIGKILL resumes from its checkpoint, and DDP on CPU with
two gloo processes under ``accelerate launch`` gives the loss of one process on the same global batch.

Both start ``rlaif train dpo`` as real subprocesses on the tiny model (one torch thread each).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import crafted_store, metric

from rlaif.config import load_settings
from rlaif.store import Store
from rlaif.train.runner import run_train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ["--batch-size", "4", "--micro-batch-size", "2", "--lr", "1e-4", "--lr-schedule", "constant"]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def cli(db: Path, tiny: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "rlaif.cli", "--db", str(db), "train", "dpo", "--model", str(tiny), "--out", str(out), *OPTIONS,
            *extra]


def in_process(db: Path, tiny: Path, out: Path, **options):
    values = {"batch_size": 4, "micro_batch_size": 2, "lr": 1e-4, "lr_schedule": "constant", **options}
    return run_train(load_settings(db=db, engine="fake", device="cpu"), "dpo", out=out, model=str(tiny),
                     options=values, log=lambda _: None)


def wait_for_checkpoint(db: Path, child: subprocess.Popen, timeout_s: float = 180.0) -> None:
    store = Store(db, lock_timeout_s=10)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert child.poll() is None, "the training process ended before it was killed"
        if store.fetch("SELECT count(*) AS n FROM train_checkpoints WHERE kind = 'resume'")[0]["n"]:
            return
        time.sleep(0.2)
    pytest.fail("no checkpoint registered in time")


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_dir, tmp_path):
    db, out = tmp_path / "kill.duckdb", tmp_path / "run"
    crafted_store(db, pairs=24)
    child = subprocess.Popen([sys.executable, *cli(db, tiny_dir, out, "--max-steps", "1000", "--save-every", "3")],
                             env=child_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_checkpoint(db, child)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    store = Store(db)
    (run,) = store.fetch("SELECT run_id, status, steps_done FROM train_runs")
    assert run["status"] == "running" and run["steps_done"] % 3 == 0 and run["steps_done"] >= 3
    saved = run["steps_done"]
    total = saved + 4
    resumed = in_process(db, tiny_dir, out, max_steps=total, save_every=3)
    assert resumed.run_id == run["run_id"] and not resumed.already_done
    (row,) = store.fetch("SELECT status, resumes, steps_done, total_steps FROM train_runs")
    assert row == {"status": "completed", "resumes": 1, "steps_done": total, "total_steps": total}
    steps = [r["step"] for r in store.fetch("SELECT step FROM train_metrics WHERE phase = 'step' AND name = 'loss' "
                                            "ORDER BY step")]
    assert steps == list(range(1, total + 1))  # the count continues; no step twice, none missing
    # The same run without the kill: resuming restored weights, optimizer, schedule and data order exactly.
    straight = in_process(db, tiny_dir, tmp_path / "straight", max_steps=total, save_every=3)
    assert metric(store, resumed.run_id, "loss") == pytest.approx(metric(store, straight.run_id, "loss"), abs=1e-5)
    kinds = store.fetch("SELECT kind, step FROM train_checkpoints WHERE run_id = ? AND NOT pruned ORDER BY step",
                        [resumed.run_id])
    assert kinds == [{"kind": "final", "step": total}]  # resume states are deleted once the run is complete


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ddp_on_two_gloo_processes_gives_the_loss_of_one(tiny_dir, tmp_path):
    db = tmp_path / "ddp.duckdb"
    crafted_store(db, pairs=24)
    single = in_process(db, tiny_dir, tmp_path / "one", max_steps=4, lr=1e-3, save_every=0)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port())]
    done = subprocess.run([*launch, *cli(db, tiny_dir, tmp_path / "two", "--max-steps", "4", "--lr", "1e-3",
                                         "--save-every", "0")],
                          check=False, env=child_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    store = Store(db)
    (two,) = store.fetch("SELECT run_id, world_size, status FROM train_runs WHERE world_size = 2")
    assert two["status"] == "completed"
    one_losses, two_losses = metric(store, single.run_id, "loss"), metric(store, two["run_id"], "loss")
    assert len(one_losses) == 4
    # Same global batches, gradients averaged over the two processes: only the order of float sums differs.
    assert two_losses == pytest.approx(one_losses, rel=1e-4, abs=1e-6)
    assert metric(store, two["run_id"], "loss", "train") == pytest.approx(metric(store, single.run_id, "loss", "train"),
                                                                       rel=1e-3)
    assert done.stdout.count("saved ") == 1  # one process writes the model and the rows
