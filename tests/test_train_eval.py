"""Win-rate arithmetic against hand-computed values, and the training commands end to end on the tiny model with
the fake judge: ``rlaif train dpo``, ``rlaif eval winrate``, ``rlaif train rm`` and ``rlaif score``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from train_helpers import crafted_store, eval_prompts_file

from rlaif.cli import main
from rlaif.store import Store
from rlaif.train.winrate import bootstrap_lc, fit_length_glm, summarise, win_rate_interval

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the arithmetic -------------------------------------------------------------------------------------------


def test_win_rate_and_its_normal_interval():
    # mean 0.65; deviations .25 -.05 -.35 .15, squares sum 0.21, s^2 = 0.07; half width 1.96 * sqrt(.07) / 2
    mean, low, high = win_rate_interval([0.9, 0.6, 0.3, 0.8])
    half = 1.959963984540054 * math.sqrt(0.07) / 2
    assert (mean, low, high) == (pytest.approx(0.65), pytest.approx(0.65 - half), pytest.approx(0.65 + half))
    assert win_rate_interval([0.7]) == (0.7, 0.0, 1.0)  # one prompt: no spread to estimate
    assert win_rate_interval([1.0, 1.0, 0.98]) [2] == 1.0  # clipped to [0, 1]


def test_equal_length_differences_leave_the_win_rate_unchanged():
    fit = fit_length_glm([0.9, 0.6, 0.3, 0.8], [120, 130, 140, 150], [100, 110, 120, 130])  # every d = 20
    assert (fit.scale, fit.length_coef) == (0.0, 0.0)
    assert fit.lc_win_rate == pytest.approx(0.65)


def test_the_glm_recovers_the_length_effect_and_lc_is_the_zero_length_prediction():
    a, b = 0.3, 1.2
    d = np.array([-50.0, -20.0, 0.0, 10.0, 40.0, 80.0])
    p = 1 / (1 + np.exp(-(a + b * np.tanh(d / d.std()))))  # preferences that follow the model exactly
    fit = fit_length_glm(p, 100 + d, np.full(6, 100.0))
    assert (fit.intercept, fit.length_coef, fit.scale) == (pytest.approx(a), pytest.approx(b), pytest.approx(d.std()))
    assert fit.lc_win_rate == pytest.approx(1 / (1 + math.exp(-0.3)))  # 0.574443
    assert float(p.mean()) == pytest.approx(0.594405)  # the raw win rate is inflated by the longer answers
    swapped = fit_length_glm(1 - p, np.full(6, 100.0), 100 + d)
    assert swapped.lc_win_rate == pytest.approx(1 - fit.lc_win_rate)


def test_summary_counts_and_a_seeded_bootstrap():
    p, lp, lb = [0.9, 0.5, 0.2, 0.7, 0.6], [50, 80, 20, 90, 40], [60, 60, 60, 60, 60]
    stats = summarise(p, lp, lb, seed=3, samples=200)
    assert (stats.prompts, stats.wins, stats.ties, stats.losses) == (5, 3, 1, 1)
    assert (stats.mean_len_policy, stats.mean_len_base) == (56.0, 60.0)
    assert stats.lc_win_rate_low <= stats.lc_win_rate <= stats.lc_win_rate_high
    assert bootstrap_lc(p, lp, lb, seed=3, samples=200) == (stats.lc_win_rate_low, stats.lc_win_rate_high)


# --- end to end -----------------------------------------------------------------------------------------------


def test_train_dpo_then_eval_winrate_end_to_end(tiny_dir, tmp_path, capsys):
    db = tmp_path / "e2e.duckdb"
    crafted_store(db, pairs=24)
    out = tmp_path / "dpo"
    assert main(["--db", str(db), "--engine", "fake", "train", "dpo", "--model", str(tiny_dir), "--out", str(out),
                 "--max-steps", "2", "--batch-size", "4", "--micro-batch-size", "2", "--lr", "1e-3"]) == 0
    assert f"model: {out / 'final'}" in capsys.readouterr().out
    prompts = eval_prompts_file(tmp_path / "prompts.jsonl")
    args = ["--db", str(db), "--engine", "fake", "eval", "winrate", "--policy", str(out), "--prompts", str(prompts),
            "--max-tokens", "8"]
    assert main(args) == 0
    shown = capsys.readouterr().out
    # The fake judge puts 0.75 on slot (A) whatever it holds: both orders average to exactly 0.5, a tie each time.
    assert "win rate 0.500 [0.500, 0.500], length-controlled 0.500" in shown and "over 3 prompts" in shown
    store = Store(db)
    (row,) = store.fetch("SELECT * FROM winrate_evals")
    assert (row["prompts"], row["ties"], row["base"], row["policy"]) == (3, 3, str(tiny_dir), str(out / "final"))
    judged = store.fetch("SELECT * FROM winrate_judgements")
    assert len(judged) == 3
    assert all((j["p_policy_ab"], j["p_policy_ba"]) == (pytest.approx(0.75), pytest.approx(0.25)) for j in judged)
    (run,) = store.fetch("SELECT kind, status FROM runs")
    assert run == {"kind": "eval-winrate", "status": "completed"}
    stages = store.fetch("SELECT stage, count(*) AS n, count(DISTINCT model) AS models FROM generations "
                         "WHERE run_id = ? GROUP BY stage ORDER BY stage", [row["run_id"]])
    assert stages == [{"stage": "eval_base", "n": 3, "models": 1}, {"stage": "eval_policy", "n": 3, "models": 1},
                      {"stage": "judge", "n": 6, "models": 1}]
    assert main(args) == 0 and "is stored already" in capsys.readouterr().out


def test_bad_checkpoint_path_and_missing_base_are_one_line(tmp_path, capsys):
    prompts = eval_prompts_file(tmp_path / "prompts.jsonl")
    assert main(["--db", str(tmp_path / "x.duckdb"), "eval", "winrate", "--policy", str(tmp_path / "nope"),
                 "--prompts", str(prompts)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not a model folder" in err and "\n" not in err


def test_train_sft_and_rm_then_score_stored_responses(tiny_dir, tmp_path, capsys):
    db = tmp_path / "rm.duckdb"
    crafted_store(db, pairs=24)
    assert main(["--db", str(db), "--engine", "fake", "demo", "--limit", "5", "--no-prefect", "--no-progress"]) == 0
    assert main(["--db", str(db), "train", "sft", "--model", str(tiny_dir), "--out", str(tmp_path / "sft"),
                 "--max-steps", "2", "--batch-size", "4", "--micro-batch-size", "2"]) == 0
    assert (tmp_path / "sft" / "final" / "model.safetensors").is_file()
    out = tmp_path / "rm"
    assert main(["--db", str(db), "train", "rm", "--model", str(tiny_dir), "--out", str(out), "--max-steps", "3",
                 "--batch-size", "4", "--micro-batch-size", "4"]) == 0
    capsys.readouterr()
    assert main(["--db", str(db), "score", "--model", str(out / "final")]) == 0
    store = Store(db)
    stages = {r["stage"]: r["n"] for r in store.fetch(
        "SELECT stage, count(*) AS n FROM generations WHERE stage IN ('respond', 'revise') GROUP BY 1")}
    rows = store.fetch("SELECT * FROM reward_scores")
    # every prompt's answer, and the revisions of those not marked helpful (kept unrevised)
    assert stages["respond"] == 5 and stages["revise"] >= 1 and len(rows) == stages["respond"] + stages["revise"]
    assert all(r["reward_model"].endswith("@3") and math.isfinite(r["reward"]) for r in rows)
    assert main(["--db", str(db), "score", "--model", str(out / "final")]) == 0
    assert "nothing to score" in capsys.readouterr().out
