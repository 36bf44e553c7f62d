"""The RL commands: `rlaif train grpo` on the tiny model with a rule reward, `rlaif best-of-n` on the fake
engine, and bad input as one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rl_helpers import prompt_store, shared_tiny_model, write_rules

from rlaif.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_train_grpo_from_the_command_line(settings, tmp_path, tmp_path_factory, monkeypatch, capsys):
    tiny = shared_tiny_model(tmp_path_factory)
    monkeypatch.chdir(tmp_path)
    rule = write_rules(tmp_path)
    prompt_store(settings.db)
    code = main(["--db", str(settings.db), "train", "grpo", "--out", str(tmp_path / "grpo"), "--reward", rule,
                 "--model", str(tiny), "--max-steps", "2", "--batch-size", "8", "--samples", "4",
                 "--max-new-tokens", "6", "--no-monitor-judge", "--kl-target", "0"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "grpo run train-" in out and "model: " in out and (tmp_path / "grpo" / "final" / "config.json").is_file()


def test_best_of_n_from_the_command_line(settings, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rule = write_rules(tmp_path)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(4)), encoding="utf-8")
    code = main(["--db", str(settings.db), "--engine", "fake", "best-of-n", "--reward", rule, "--n", "3",
                 "--prompts", str(prompts), "--split", "all"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "best-of-3: 4 prompts selected" in out and "best_of_n_sft" in out


@pytest.mark.parametrize("args, message", [
    (["train", "ppo", "--out", "x", "--reward", "rule:nothing"], "--reward 'rule:nothing': expected rm:CKPT"),
    (["train", "ppo", "--out", "x", "--reward", "rm:/no/such/rm"], "no such folder"),
    (["train", "grpo", "--out", "x", "--reward", "judge", "--samples", "1"], "rollout.samples must be >= 2"),
    (["iterate", "--prompts", "p.jsonl", "--out", "o", "--trainer", "ppo"], "needs at least one --reward"),
])
def test_bad_input_is_one_line(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rlaif.cli", "--db", str(tmp_path / "x.duckdb"), *args],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr


def test_reward_model_rewards_ppo_and_best_of_n_baseline(settings, tmp_path, tmp_path_factory, monkeypatch, capsys):
    """rlaif train rm -> PPO on rm + a weighted rule -> best-of-N against the base beside it in the evaluation."""
    from train_helpers import crafted_store, eval_prompts_file

    from rlaif.store import Store

    tiny = shared_tiny_model(tmp_path_factory)
    monkeypatch.chdir(tmp_path)
    rule = write_rules(tmp_path)
    db = str(settings.db)
    crafted_store(settings.db, pairs=24)
    assert main(["--db", db, "train", "rm", "--model", str(tiny), "--out", "rm", "--max-steps", "2",
                 "--batch-size", "4", "--micro-batch-size", "4"]) == 0
    assert main(["--db", db, "train", "ppo", "--out", "ppo", "--reward", "rm:rm@1", "--reward", f"{rule}@0.5",
                 "--model", str(tiny), "--max-steps", "2", "--batch-size", "8", "--max-new-tokens", "6",
                 "--no-monitor-judge"]) == 0
    store = Store(settings.db)
    rm_source = f"rm:{(tmp_path / 'rm').resolve()}"
    weights = store.fetch("SELECT source, any_value(weight) AS w, count(*) AS n FROM rollout_rewards "
                          "GROUP BY source ORDER BY source")
    assert weights == [{"source": rm_source, "w": 1.0, "n": 16}, {"source": rule, "w": 0.5, "n": 16}]
    combined = store.fetch(
        "SELECT max(abs(o.score - (rm.value + 0.5 * r.value))) AS err FROM rl_rollouts o "
        "JOIN rollout_rewards rm ON rm.key = o.key AND rm.source = ? "
        "JOIN rollout_rewards r ON r.key = o.key AND r.source = ?", [rm_source, rule])[0]["err"]
    assert combined < 1e-5  # the stored score is the weighted sum of the stored rewards

    capsys.readouterr()
    prompts = eval_prompts_file(tmp_path / "eval.jsonl")
    assert main(["--db", db, "--engine", "fake", "eval", "best-of-n", "--reward", "rm:rm", "--n", "2", "--prompts",
                 str(prompts), "--base", str(tiny), "--max-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "best-of-n  win rate" in out
    rows = store.fetch("SELECT method, prompts FROM policy_comparison")
    assert rows == [{"method": "best-of-n", "prompts": 3}]
