"""Kill an RL run (SIGKILL, a real subprocess) after its first checkpoint and run it again: it resumes from the
checkpoint and ends with exactly the weights of a run that was never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from rl_helpers import prompt_store, shared_tiny_model

STEPS, SAVE_EVERY = 6, 2

# In the process to be killed the rule sleeps, so the run is still going when the test sees its first checkpoint.
SLOW_RULES = '''
import os, time

def ends_with_word(prompts, completions, **info):
    if os.environ.get("RL_TEST_SLOW"):
        time.sleep(0.4)
    return [1.0 if c.rstrip().endswith("word") else 0.0 for c in completions]
'''


def options():
    from rlaif.train.rl_options import RlOptions

    return RlOptions(estimator="ppo", rewards=("rule:slow_rules:ends_with_word",), lr=1e-4, batch_size=16,
                     micro_batch_size=16, max_steps=STEPS, save_every=SAVE_EVERY, keep_checkpoints=1,
                     monitor_prompts=2, monitor_every=2, eos_penalty=0.5,
                     rollout={"max_new_tokens": 6, "temperature": 1.0}, update={"epochs": 2, "minibatches": 2})


def train(db: Path, tiny: Path, out: Path, log=print):
    from rlaif.store import Store
    from rlaif.train.rewards import build_reward, parse_reward_specs
    from rlaif.train.rl import run_rl

    opts = options()
    return run_rl(Store(db), options=opts, reward=build_reward(parse_reward_specs(opts.rewards)), base_model="tiny",
                  base_path=Path(tiny), out_dir=Path(out), device="cpu", log=log)


DRIVER = textwrap.dedent('''
    import sys, torch
    torch.set_num_threads(1)
    from test_rl_resume import train
    train(*sys.argv[1:4])
''')


def run_driver(tmp: Path, db: Path, tiny: Path, out: Path) -> subprocess.Popen:
    tests = str(Path(__file__).parent)
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(db), str(tiny), str(out)], cwd=tmp,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([tests, *sys.path]), "RL_TEST_SLOW": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(store, folder: Path, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Until a checkpoint is registered (its folder alone is not enough: it is renamed into place, then registered)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"the run ended before its first checkpoint:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        # The folder first (free to look at); then the database, rarely, since every look holds the writer off.
        if (folder / f"step-{SAVE_EVERY:08d}").is_dir() and \
                store.fetch("SELECT count(*) AS n FROM train_checkpoints WHERE kind = 'resume'")[0]["n"]:
            return
        time.sleep(0.2)


def weights(folder: str) -> dict:
    from rlaif.train.models import load_causal_lm

    return load_causal_lm(Path(folder)).state_dict()


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path, tmp_path_factory, monkeypatch, one_torch_thread):
    monkeypatch.chdir(tmp_path)
    tiny = shared_tiny_model(tmp_path_factory)
    (tmp_path / "slow_rules.py").write_text(SLOW_RULES, encoding="utf-8")
    store = prompt_store(tmp_path / "rl.duckdb")

    killed = run_driver(tmp_path, store.path, tiny, tmp_path / "resumed")
    wait_for_checkpoint(store, tmp_path / "resumed" / "checkpoints", killed)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    row = store.fetch("SELECT r.status, max(c.step) AS step FROM train_runs r JOIN train_checkpoints c USING (run_id) "
                      "WHERE c.kind = 'resume' GROUP BY r.status")[0]
    assert row["status"] == "running" and SAVE_EVERY <= row["step"] < STEPS  # a killed run stays running

    lines: list[str] = []
    train(store.path, tiny, tmp_path / "resumed", log=lines.append)  # the same command again, in this process
    assert any(f"resuming at step {row['step']}" in line for line in lines), lines
    train(store.path, tiny, tmp_path / "straight", log=lambda _: None)

    runs = {r["out_dir"].rsplit("/", 1)[-1]: r for r in store.fetch(
        "SELECT run_id, out_dir, status, resumes, steps_done, final_path FROM train_runs")}
    assert runs["resumed"]["resumes"] == 1 and runs["straight"]["resumes"] == 0
    assert all(r["status"] == "completed" and r["steps_done"] == STEPS for r in runs.values())
    resumed, fresh = weights(runs["resumed"]["final_path"]), weights(runs["straight"]["final_path"])
    assert resumed.keys() == fresh.keys() and all(torch.equal(resumed[k], fresh[k]) for k in fresh)

    rid = runs["resumed"]["run_id"]
    per_step = store.fetch("SELECT step, count(*) AS n FROM rl_rollouts WHERE run_id = ? GROUP BY step ORDER BY step",
                           [rid])
    assert per_step == [{"step": s, "n": 16} for s in range(1, STEPS + 1)]  # every step once, none twice
    metric_steps = store.fetch("SELECT count(DISTINCT step) AS d, count(*) AS n FROM train_metrics "
                               "WHERE run_id = ? AND name = 'reward'", [rid])[0]
    assert metric_steps == {"d": STEPS, "n": STEPS}
    monitor = store.fetch("SELECT list(step ORDER BY step) AS steps FROM overopt_records WHERE run_id = ?", [rid])
    assert monitor[0]["steps"] == list(range(0, STEPS + 1, 2))
    same = store.fetch("SELECT count(*) AS n FROM rl_rollouts a JOIN rl_rollouts b USING (step, sample, prompt_id) "
                       "WHERE a.run_id = ? AND b.run_id = ? AND a.score = b.score AND a.kl = b.kl",
                       [rid, runs["straight"]["run_id"]])[0]["n"]
    assert same >= 16 * STEPS  # the same rollouts, scores and KLs at every step
