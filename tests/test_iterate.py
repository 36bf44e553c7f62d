"""The closed loop's bookkeeping: steps in order, each recorded; a rerun resumes at the step where it stopped;
the next iteration starts from the model the previous one trained. The steps themselves are replaced by
recorders here (the end-to-end cycle on the fake engine and the tiny model is test_iterate_cycle)."""

from __future__ import annotations

import pytest

from rlaif import iterate as it
from rlaif.errors import ConfigError


@pytest.fixture
def calls(monkeypatch):
    log: list[tuple] = []
    state = {"fail_train_once": False}

    def generate_step(settings, options, policy, log_):
        log.append(("generate", policy))
        return {"run_id": f"gen-{len(log)}", "comparisons": 3, "revisions": 3}

    def train_step(settings, options, policy, iteration, log_):
        log.append(("train", policy))
        if state["fail_train_once"]:
            state["fail_train_once"] = False
            raise RuntimeError("killed mid-training")
        return {"run_id": f"train-{iteration}", "final_path": f"{options.out}/iter-{iteration}/final"}

    def evaluate_step(settings, options, policy, trained, base_model, log_):
        log.append(("evaluate", policy, trained))
        return {"eval_previous_id": f"e{len(log)}", "win_rate_vs_previous": 0.6, "eval_base_id": f"b{len(log)}",
                "win_rate_vs_base": 0.7 if policy != base_model else 0.6}

    monkeypatch.setattr(it, "generate_step", generate_step)
    monkeypatch.setattr(it, "train_step", train_step)
    monkeypatch.setattr(it, "evaluate_step", evaluate_step)
    return log, state


def test_a_rerun_resumes_at_the_step_where_it_stopped(settings, calls, tmp_path):
    log, state = calls
    options = it.IterateOptions(prompts="p.jsonl", out=str(tmp_path / "loop"), iterations=2, model="base")
    state["fail_train_once"] = True
    with pytest.raises(RuntimeError, match="killed"):
        it.run_iterate(settings, options, log=lambda _: None)
    assert log == [("generate", "base"), ("train", "base")]
    from rlaif.store import Store

    store = Store(settings.db)
    steps = store.fetch("SELECT iteration, step, status FROM iteration_steps ORDER BY started_at")
    assert [(s["step"], s["status"]) for s in steps] == [("generate", "completed"), ("train", "failed")]
    assert store.fetch("SELECT status FROM iterate_loops")[0]["status"] == "failed"

    log.clear()
    rows = it.run_iterate(settings, options, log=lambda _: None)
    first = f"{tmp_path}/loop/iter-1/final"
    assert log == [("train", "base"), ("evaluate", "base", first),  # generate was not run again
                   ("generate", first), ("train", first), ("evaluate", first, f"{tmp_path}/loop/iter-2/final")]
    assert [(r["iteration"], r["policy_before"], r["status"]) for r in rows] == [(1, "base", "completed"),
                                                                                  (2, first, "completed")]
    assert rows[1]["win_rate_vs_base"] == 0.7 and rows[1]["win_rate_vs_previous"] == 0.6
    assert rows[0]["generate_run_id"] and rows[1]["train_run_id"] == "train-2"
    assert store.fetch("SELECT status FROM iterate_loops")[0]["status"] == "completed"

    log.clear()
    more = options.model_copy(update={"iterations": 3})  # the same loop, one iteration more
    assert it.loop_id(more, "base") == it.loop_id(options, "base")
    it.run_iterate(settings, more, log=lambda _: None)
    assert [c[0] for c in log] == ["generate", "train", "evaluate"]
    assert store.fetch("SELECT iterations FROM iterate_loops")[0]["iterations"] == 3


def test_options_say_what_is_wrong():
    with pytest.raises(ValueError, match="needs at least one --reward"):
        it.IterateOptions(prompts="p", out="o", trainer="ppo")
    with pytest.raises(ValueError, match="DPO learns from the judged pairs"):
        it.IterateOptions(prompts="p", out="o", rewards=("judge",))


def test_the_policy_role_must_load_checkpoints_in_process(settings):
    remote = settings.model_copy(update={"engine": "openai"})
    with pytest.raises(ConfigError, match="policy role's engine is openai"):
        it.role_settings(remote, "runs/iter-1/final", "feedback")
    both = it.role_settings(settings, "ckpt", "policy")
    assert both.policy.model == "ckpt" and both.feedback.model == "ckpt"
    assert it.role_settings(settings, "ckpt", "feedback").feedback.model == settings.feedback.model


@pytest.mark.prefect
def test_the_iterate_flow_runs_its_steps_as_prefect_tasks(prefect_harness, settings, calls, tmp_path):
    """The real Prefect flow over the same (recording) steps: every step a task, the loop recorded."""
    from rlaif.flows.iterate import iterate_flow

    log, _ = calls
    options = it.IterateOptions(prompts="p.jsonl", out=str(tmp_path / "loop"), iterations=2, model="base")
    rows = iterate_flow(options, settings_overrides={"db": str(settings.db), "engine": "fake"})
    assert [c[0] for c in log] == ["generate", "train", "evaluate"] * 2
    assert [r["iteration"] for r in rows] == [1, 2] and rows[1]["policy_before"].endswith("iter-1/final")
    again = iterate_flow(options, settings_overrides={"db": str(settings.db), "engine": "fake"})
    assert len(log) == 6 and again == rows  # the rerun found every step done
