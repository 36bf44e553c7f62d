"""``bench/gpu_check.sh --cpu``: every phase of the GPU check runs the project's training code at tiny sizes and
the script writes one JSON of figures (the GPU run itself has not happened: no GPU was lent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rl_helpers import shared_tiny_model

REPO = Path(__file__).resolve().parents[1]
PHASES = ["sft", "rm", "dpo", "grpo", "fsdp", "dpo-0.5b"]


def test_the_gpu_check_runs_every_phase_on_the_cpu(tmp_path_factory, tmp_path):
    tiny = shared_tiny_model(tmp_path_factory)
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--cpu", "--model", str(tiny), "--out",
                           str(out)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [p["phase"] for p in report["phases"]] == PHASES
    failed = [p for p in report["phases"] if not p["ok"]]
    assert not failed, failed
    assert report["ok"] and report["mode"] == "cpu" and report["gpu"] is None and report["weights"] == "trained"
    by = {p["phase"]: p for p in report["phases"]}
    for name in ("sft", "rm", "dpo", "fsdp", "dpo-0.5b"):
        assert by[name]["tokens_per_s"] > 0 and by[name]["loss_first"] == by[name]["loss_first"], name
    assert by["fsdp"]["distributed"] == "MULTI_CPU"  # launched by accelerate; FSDP2 itself needs the GPU
    assert 0 < by["dpo-0.5b"]["mfu"] < 1 and by["grpo"]["rollout_tokens_per_s"] > 0


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--gpus", "8"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "--gpus" in done.stderr
