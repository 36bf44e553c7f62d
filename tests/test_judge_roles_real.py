"""The evaluation role on a real engine: ``rlaif eval winrate`` with the tiny model answering and judging in process
(transformers), in the mode ``rlaif judge eval`` chose for that engine; the judge is the base, so the run warns and
stores it."""

from __future__ import annotations

import pytest
from train_helpers import crafted_store, eval_prompts_file

from rlaif.cli import main
from rlaif.judge.config import default_mode
from rlaif.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_real_judge_that_is_the_base_warns_and_is_recorded(tiny_dir, tmp_path, capsys):
    db = tmp_path / "real.duckdb"
    crafted_store(db, pairs=4)
    prompts = eval_prompts_file(tmp_path / "prompts.jsonl", count=2)
    args = ["--db", str(db), "--engine", "transformers", "--model", str(tiny_dir), "eval", "winrate", "--policy",
            str(tiny_dir), "--base", str(tiny_dir), "--prompts", str(prompts), "--max-tokens", "6"]
    assert main(args) == 0
    out = capsys.readouterr().out
    mode = default_mode("transformers")
    assert f"judge: {tiny_dir} (transformers, mode {mode})" in out
    (warning,) = [line for line in out.splitlines() if line.startswith("warning: the judge")]
    assert "the policy's base model" in warning
    (row,) = Store(db).fetch("SELECT * FROM winrate_evals")
    assert (row["judge_engine"], row["judge_mode"], row["judge_is_base"], row["judge_warning"]) == (
        "transformers", mode, True, warning)
    assert row["prompts"] == 2 and 0.0 <= row["win_rate"] <= 1.0
    calls = Store(db).fetch("SELECT kind, count(*) AS n FROM generations WHERE stage = 'judge' GROUP BY kind")
    assert calls and all(c["n"] > 0 for c in calls)  # real judge calls, recorded under the evaluation's run
