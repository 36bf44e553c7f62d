"""The evaluation role: who judges win rates and the RL monitor, and what is said and stored when that judge is the
policy's base or the model that labelled its data; the judge reward in the measured mode; the monitor's refusal to
compare a reward with itself. Fakes here; the real embedded model in tests/test_judge_roles_real.py."""

from __future__ import annotations

import math

import pytest
from train_helpers import crafted_store, eval_prompts_file

from rlaif.cli import main
from rlaif.config import load_settings
from rlaif.engines.fake import FakeEngine
from rlaif.errors import ConfigError
from rlaif.store import Store
from rlaif.train.judge_role import check_judge, same_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def batch(*responses):
    from rlaif.train.rewards import RewardBatch

    return RewardBatch([[{"role": "user", "content": "how do I stay safe on a bike?"}] for _ in responses],
                       list(responses), [f"p{i}" for i in range(len(responses))], [True] * len(responses))


# --- settings ---------------------------------------------------------------------------------------------------


def test_the_eval_role_reads_env_toml_and_options_and_validates_its_mode(settings, tmp_path, monkeypatch, capsys):
    assert settings.eval.model == settings.model and settings.eval.mode is None
    assert settings.eval.judge_mode() == "choice"  # the fake engine's measured default (rlaif.judge.config)
    toml = tmp_path / "rlaif.toml"
    toml.write_text('engine = "fake"\n[eval]\nmodel = "big-judge"\nmode = "score"\n')
    monkeypatch.setenv("RLAIF_CONFIG", str(toml))
    loaded = load_settings()
    assert (loaded.eval.model, loaded.eval.judge_mode(), loaded.feedback.model) == ("big-judge", "score",
                                                                                    loaded.model)
    monkeypatch.setenv("RLAIF_EVAL_MODE", "contrast")
    assert load_settings().eval.mode == "contrast"  # the environment beats rlaif.toml
    again = load_settings().with_role("eval", model="other", mode=None)
    assert (again.eval.model, again.eval.mode) == ("other", "contrast")
    with pytest.raises(ConfigError, match="option eval.mode"):
        load_settings().with_role("eval", mode="vote")
    monkeypatch.setenv("RLAIF_EVAL_MODE", "vote")
    with pytest.raises(ConfigError, match="eval.mode .from env RLAIF_EVAL_MODE"):
        load_settings()
    monkeypatch.delenv("RLAIF_EVAL_MODE")
    assert main(["config"]) == 0
    shown = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "big-judge" in shown["eval.model"] and f"{toml} [eval]" in shown["eval.model"]
    assert "score" in shown["eval.mode"] and "auto" not in shown["eval.mode"]


def test_same_model_matches_a_served_name_with_its_folder(tmp_path):
    folder = tmp_path / "SmolLM2-135M-Instruct"
    folder.mkdir()
    assert same_model(str(folder), "SmolLM2-135M-Instruct") and same_model("smollm2-135m-instruct", str(folder))
    assert same_model(str(folder), str(tmp_path / "." / "SmolLM2-135M-Instruct"))
    assert not same_model(str(folder), "SmolLM2-360M-Instruct") and not same_model(None, "x")
    other = tmp_path / "final"
    other.mkdir()
    assert not same_model(str(other), str(folder))


def test_check_judge_names_each_circularity_in_one_line(settings):
    independent = check_judge(settings.with_role("eval", model="judge-9b"), base="base-1b", labellers=["critic"])
    assert independent.warning is None and not independent.is_base and not independent.is_labeller
    circular = check_judge(settings, base=settings.model, labellers=[settings.model])
    assert circular.is_base and circular.is_labeller
    assert "\n" not in circular.warning and "the policy's base model and the model that labelled" in circular.warning
    assert circular.columns()["judge_warning"] == circular.warning and circular.columns()["judge_mode"] == "choice"


# --- eval winrate -------------------------------------------------------------------------------------------------


def test_winrate_warns_and_stores_when_the_judge_labelled_the_data(tiny_dir, tmp_path, capsys):
    db = tmp_path / "w.duckdb"
    crafted_store(db, pairs=4)  # its comparisons were judged by a model named "judge"
    prompts = eval_prompts_file(tmp_path / "prompts.jsonl")
    common = ["--db", str(db), "--engine", "fake", "eval", "winrate", "--policy", str(tiny_dir), "--base",
              str(tiny_dir), "--prompts", str(prompts), "--max-tokens", "8"]
    assert main([*common, "--judge-model", "judge"]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning: the judge judge")]
    assert len(warnings) == 1 and "labelled its training data" in warnings[0]
    assert main([*common, "--judge-model", "outside-judge", "--judge-mode", "score"]) == 0
    assert "warning" not in capsys.readouterr().out
    rows = Store(db).fetch("SELECT judge_model, judge_engine, judge_mode, judge_is_base, judge_is_labeller, "
                           "judge_warning FROM winrate_evals ORDER BY judge_model")
    assert [r["judge_model"] for r in rows] == ["judge", "outside-judge"]
    assert (rows[0]["judge_is_labeller"], rows[0]["judge_is_base"], rows[0]["judge_warning"]) == (
        True, False, warnings[0])
    assert (rows[1]["judge_mode"], rows[1]["judge_is_labeller"], rows[1]["judge_warning"]) == ("score", False, None)
    judged = Store(db).fetch("SELECT DISTINCT model FROM generations WHERE stage = 'judge'")
    assert {r["model"] for r in judged} == {"judge", "outside-judge"}  # the eval role's engine did the judging
    assert main([*common, "--judge-mode", "vote"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: option eval.mode") and "\n" not in err


def test_the_report_shows_the_judge_warning(tiny_dir, tmp_path):
    from rlaif.report import write_report

    db = tmp_path / "r.duckdb"
    crafted_store(db, pairs=4)
    prompts = eval_prompts_file(tmp_path / "prompts.jsonl")
    assert main(["--db", str(db), "--engine", "fake", "eval", "winrate", "--policy", str(tiny_dir), "--base",
                 str(tiny_dir), "--prompts", str(prompts), "--max-tokens", "8", "--judge-model", str(tiny_dir)]) == 0
    page = write_report(db, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "is the policy&#x27;s base model" in page or "is the policy's base model" in page


# --- the judge reward and the monitor -------------------------------------------------------------------------------


def test_the_judge_reward_rates_in_the_mode_asked_and_refuses_pairwise_ones(settings):
    from rlaif.train.judge_reward import contrast_to_reward, judge_reward, reward_mode

    said: list[str] = []
    assert reward_mode("fake", None, said.append) == "score" and "compares two answers" in said[0]
    assert reward_mode("transformers", None, said.append) in ("score", "contrast")
    with pytest.raises(ConfigError, match="compares two answers; a reward rates one"):
        reward_mode("fake", "choice")

    engine = FakeEngine()
    reward = judge_reward(settings, "harmless", engine=engine, mode="contrast")
    b = batch("wear a helmet and use lights at night", "bananas are yellow")
    scores = reward.score(b)
    assert reward.mode == "contrast" and len(engine.score_requests) == 4 and not engine.choice_requests
    framed, baseline = engine.score_requests[0], engine.score_requests[1]
    assert framed.continuation == baseline.continuation and framed.messages != baseline.messages
    assert all(-1.0 < v < 1.0 for v in scores.values) and "nats/token PMI" in scores.details[0]
    assert contrast_to_reward(0.4, 0.2) == pytest.approx(2 / (1 + math.exp(-2.0)) - 1)


def test_the_monitor_refuses_to_compare_the_reward_with_itself(settings, tiny_dir, tmp_path, capsys):
    from rlaif.train.rl_runner import _monitor_judge, build_rewards, judge_factory, resolve_specs

    specs = resolve_specs(["judge"])
    reward = build_rewards(settings, specs, judge_factory(settings, "harmless"))
    with pytest.raises(ConfigError, match="monitor's judge .* is the reward being optimised"):
        _monitor_judge(settings, "harmless", reward)
    other_mode = _monitor_judge(settings.with_role("eval", mode="contrast"), "harmless", reward)
    assert other_mode.mode == "contrast"
    other_model = _monitor_judge(settings.with_role("eval", model="judge-2"), "harmless", reward)
    assert other_model.model == "judge-2"
    db = tmp_path / "rl.duckdb"
    prompts = eval_prompts_file(tmp_path / "prompts.jsonl")
    code = main(["--db", str(db), "--engine", "fake", "train", "grpo", "--reward", "judge", "--model", str(tiny_dir),
                 "--prompts", str(prompts), "--out", str(tmp_path / "out"), "--max-steps", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: the over-optimisation monitor's judge") and "\n" not in err
