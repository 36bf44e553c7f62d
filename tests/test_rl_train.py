"""PPO and group-relative RL on the tiny random model with a rule reward: the reward rises, KL stays bounded,
the weights move, and every rollout is stored with its rewards. Seeded, so each run is the same every time."""

from __future__ import annotations

import pytest
import torch
from rl_helpers import CONTRARY_JUDGE, prompt_store, shared_tiny_model, write_rules

from rlaif.errors import ConfigError
from rlaif.train.rewards import RuleReward, build_reward, parse_reward_specs
from rlaif.train.rl import run_rl
from rlaif.train.rl_options import RlOptions
from rlaif.train.tracking import read_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 30


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return shared_tiny_model(tmp_path_factory)


def options(estimator: str, rule: str, **kw) -> RlOptions:
    values = dict(estimator=estimator, rewards=(rule,), lr=1e-4, batch_size=32, micro_batch_size=32, max_steps=STEPS,
                  save_every=0, monitor_every=10, monitor_prompts=4, eos_penalty=0.0,
                  rollout={"max_new_tokens": 8, "temperature": 1.0, "batch_size": 32})
    if estimator == "ppo":
        values.update(update={"epochs": 2, "minibatches": 2}, kl={"coef": 0.05, "target": 6.0, "horizon": 500.0})
    else:  # K = 8: a group holds a success often enough at a 3% start
        values.update(lr=3e-4, kl={"coef": 0.15}, rollout={**values["rollout"], "samples": 8})
    values.update(kw)
    return RlOptions(**values)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("estimator", ["ppo", "grpo"])
def test_reward_rises_and_kl_stays_bounded(estimator, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rule = write_rules(tmp_path)
    store = prompt_store(tmp_path / "rl.duckdb")
    opts = options(estimator, rule)
    reward = build_reward(parse_reward_specs(opts.rewards))
    lines: list[str] = []
    judge = RuleReward(CONTRARY_JUDGE) if estimator == "ppo" else None
    result = run_rl(store, options=opts, reward=reward, base_model="tiny", base_path=tiny_dir,
                    out_dir=tmp_path / "out", device="cpu", judge=judge, log=lines.append)

    rewards = [v for _, v in read_metrics(store, result.run_id, "reward")]
    kls = [v for _, v in read_metrics(store, result.run_id, "kl")]
    assert len(rewards) == STEPS and len(kls) == STEPS
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.15 and last > first + 0.3, (first, last)  # measured: ppo 0.02 -> 0.87, grpo 0.01 -> 0.68
    assert max(kls) < 15.0, kls  # nats over 8 tokens (measured max: ppo 10.1, grpo 13.0)

    # the weights moved, and the servable folder is the trained policy
    from rlaif.train.models import load_causal_lm

    base, trained = state(load_causal_lm(tiny_dir)), state(load_causal_lm(result.final_path))
    moved = [k for k in base if not torch.equal(base[k], trained[k])]
    assert len(moved) > len(base) // 2

    run = store.fetch("SELECT kind, status, steps_done FROM train_runs WHERE run_id = ?", [result.run_id])[0]
    assert run == {"kind": estimator, "status": "completed", "steps_done": STEPS}
    counts = store.fetch(
        "SELECT (SELECT count(*) FROM rl_rollouts WHERE run_id = $r) AS rollouts, "
        "(SELECT count(*) FROM generations WHERE run_id = $r AND stage = 'rollout') AS generations, "
        "(SELECT count(*) FROM rollout_rewards WHERE run_id = $r AND source = $rule) AS rewards, "
        "(SELECT count(*) FROM overopt_records WHERE run_id = $r) AS monitor",
        {"r": result.run_id, "rule": rule})[0]
    assert counts == {"rollouts": 32 * STEPS, "generations": 32 * STEPS, "rewards": 32 * STEPS, "monitor": 4}
    stored = store.fetch("SELECT avg(score) AS s FROM rl_rollouts WHERE run_id = ? AND step > ?",
                         [result.run_id, STEPS - 5])[0]["s"]
    assert stored == pytest.approx(last)
    for name in ("entropy", "response_length", "clip_frac", "kl_coef", "grad_norm", "rollout_tokens_per_s"):
        assert read_metrics(store, result.run_id, name), name
    if estimator == "ppo":
        assert read_metrics(store, result.run_id, "value_loss")
        betas = [v for _, v in read_metrics(store, result.run_id, "kl_coef")]
        assert betas[0] == 0.05 and betas[-1] != 0.05  # the adaptive controller moved it
    assert any("saved" in line for line in lines)
    warnings = store.fetch("SELECT step, since_step, proxy_delta, judge_delta FROM overopt_warnings WHERE run_id = ?",
                           [result.run_id])
    if estimator == "ppo":  # the proxy rose while the contrary judge fell: warned in the table and the output
        assert warnings and all(w["since_step"] == 0 and w["proxy_delta"] > 0 > w["judge_delta"] for w in warnings)
        assert any(line.startswith("WARNING: over-optimisation at step") for line in lines)
    else:
        assert not warnings  # no judge, no warning; KL and length are still tracked


def test_same_options_again_finds_the_completed_run(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rule = write_rules(tmp_path)
    store = prompt_store(tmp_path / "rl.duckdb")
    opts = options("rloo", rule, max_steps=2, monitor_prompts=0)
    reward = build_reward(parse_reward_specs(opts.rewards))
    first = run_rl(store, options=opts, reward=reward, base_model="tiny", base_path=tiny_dir,
                   out_dir=tmp_path / "out", device="cpu", log=lambda _: None)
    again = run_rl(store, options=opts, reward=reward, base_model="tiny", base_path=tiny_dir,
                   out_dir=tmp_path / "out", device="cpu", log=lambda _: None)
    assert again.already_done and again.run_id == first.run_id and again.final_path == first.final_path


def test_the_judge_rewards_engine_calls_are_rows_of_the_rl_run(tiny_dir, tmp_path):
    """The d-RLAIF reward and the monitor's own judge: each rating request is a generations row of the run."""
    from rlaif.engines.fake import FakeEngine
    from rlaif.train.judge_reward import judge_reward
    from rlaif.train.rewards import CombinedReward

    store = prompt_store(tmp_path / "rl.duckdb")
    engine = FakeEngine(model="fake-judge").prefer("7", 0.8)
    monitor_engine = FakeEngine(model="fake-monitor").prefer("6", 0.8)
    judge = judge_reward(None, engine=engine, log=lambda _: None)
    monitor = judge_reward(None, engine=monitor_engine, log=lambda _: None)
    opts = options("grpo", "judge", max_steps=2, batch_size=8, micro_batch_size=8, monitor_every=0,
                   monitor_prompts=2, rollout={"max_new_tokens": 4, "temperature": 1.0, "batch_size": 8,
                                               "samples": 4})
    reward = CombinedReward([(judge, 1.0)])
    with pytest.raises(ConfigError, match="monitor's judge .* is the reward being optimised"):
        run_rl(store, options=opts, reward=reward, base_model="tiny", base_path=tiny_dir, out_dir=tmp_path / "out",
               device="cpu", judge=judge, log=lambda _: None)
    result = run_rl(store, options=opts, reward=reward, base_model="tiny", base_path=tiny_dir,
                    out_dir=tmp_path / "out", device="cpu", judge=monitor, log=lambda _: None)
    rows = store.fetch("SELECT key, run_id, model FROM generations WHERE stage = 'judge'")
    sent = {r.key for r in engine.choice_requests} | {r.key for r in monitor_engine.choice_requests}
    assert engine.choice_requests and monitor_engine.choice_requests and {r["key"] for r in rows} == sent
    assert {(r["run_id"], r["model"]) for r in rows} == {(result.run_id, "fake-judge"),
                                                         (result.run_id, "fake-monitor")}
    (mode,) = store.fetch("SELECT DISTINCT judge_mode, judge_model FROM overopt_records WHERE run_id = ?",
                          [result.run_id])
    assert mode == {"judge_mode": "score", "judge_model": "fake-monitor"}
    (rewards,) = store.fetch("SELECT count(*) AS n FROM rollout_rewards WHERE run_id = ? AND source = 'judge'",
                             [result.run_id])
    assert rewards["n"] == 16
