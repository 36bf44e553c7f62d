"""Best-of-N on the fake engine with a rule reward: the highest-reward candidate is kept, every candidate is a
generations row with its rewards, the SFT view unions with sft_dataset, and a rerun reuses what is stored."""

from __future__ import annotations

import pytest

from rlaif.engines.fake import FakeEngine
from rlaif.prompts import make_prompt
from rlaif.store import Store, Writer
from rlaif.train.best_of_n import BestOfNOptions, pick_best, run_best_of_n
from rlaif.train.rewards import CombinedReward, RewardBatch, RuleReward

RULES = '''
def digit(prompts, completions, **info):
    return [float(c.rsplit(" ", 1)[-1]) for c in completions]
'''


def seeded_reply(request):
    return f"answer number {request.params.seed % 10}"  # each candidate's seed gives it its own reward


def test_pick_best_takes_the_first_maximum():
    assert pick_best([0.1, 0.7, 0.3]) == 1
    assert pick_best([2.0, 5.0, 5.0, -1.0]) == 1
    with pytest.raises(ValueError):
        pick_best([])


@pytest.fixture
def setup(tmp_path, monkeypatch):
    (tmp_path / "bon_rules.py").write_text(RULES, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path / "bon.duckdb")
    store.migrate()
    prompts = [make_prompt(f"question {i}") for i in range(6)]
    reward = CombinedReward([(RuleReward("bon_rules:digit"), 1.0)])
    return store, prompts, reward


def test_best_of_n_keeps_the_highest_reward_answer(setup):
    store, prompts, reward = setup
    options = BestOfNOptions(n=5, split="all", max_tokens=16)
    engine = FakeEngine(reply=seeded_reply)
    summary = run_best_of_n(store, engine, prompts, reward, options=options, reward_spec="rule:bon_rules:digit",
                            log=lambda _: None)
    assert summary.selected == 6 and summary.failed == 0 and len(engine.chat_requests) == 30
    assert summary.mean_best > summary.mean_all

    rows = store.fetch("SELECT * FROM best_of_n ORDER BY prompt_id")
    assert len(rows) == 6
    for row in rows:
        candidates = store.fetch("SELECT g.key, g.output, r.value FROM generations g "
                                 "JOIN rollout_rewards r USING (key) "
                                 "WHERE g.key IN (SELECT unnest(?)) AND g.stage = 'best-of-n'", [row["candidate_keys"]])
        assert len(candidates) == 5 and row["n"] == 5 and row["scored"] == 5
        best = max(c["value"] for c in candidates)
        assert row["reward"] == best and row["chosen"] == f"answer number {int(best)}"
        assert row["chosen"] == next(c["output"] for c in candidates if c["key"] == row["chosen_key"])

    sft = store.fetch("SELECT * FROM sft_dataset UNION ALL BY NAME SELECT * FROM best_of_n_sft")
    assert len(sft) == 6 and all(r["source"] == "best-of-n" and r["messages"][-1]["role"] == "assistant" for r in sft)
    assert {r["completion"] for r in sft} == {r["chosen"] for r in rows}

    again = FakeEngine(reply=seeded_reply)
    summary2 = run_best_of_n(store, again, prompts, reward, options=options, reward_spec="rule:bon_rules:digit",
                             log=lambda _: None)
    assert summary2.reused == 6 and summary2.selected == 0 and not again.chat_requests
    assert store.fetch("SELECT count(*) AS n FROM best_of_n")[0]["n"] == 6


def test_failed_candidates_are_left_out_and_counted(setup):
    store, prompts, reward = setup
    engine = FakeEngine(reply=seeded_reply)
    first = prompts[0]
    from rlaif.train.best_of_n import candidate_requests

    engine.fail(*[r.key for r in candidate_requests(first, BestOfNOptions(n=3, split="all"), engine.model)])
    summary = run_best_of_n(store, engine, prompts[:3], reward, options=BestOfNOptions(n=3, split="all"),
                            reward_spec="rule:bon_rules:digit", log=lambda _: None)
    assert summary.failed == 1 and summary.selected == 2
    run = store.fetch("SELECT status, error FROM runs WHERE kind = 'best-of-n'")[0]
    assert run["status"] == "partial" and "1 prompts had no candidate" in run["error"]


def test_the_judge_reward_calls_are_rows_of_the_run(setup):
    """Every engine call is a row: the judge's rating requests land in generations/attempts under the run's id."""
    from rlaif.train.judge_reward import judge_reward

    store, prompts, _ = setup
    judge_engine = FakeEngine(model="fake-judge").prefer("8", 0.9)
    judge = judge_reward(None, engine=judge_engine)
    reward = CombinedReward([(judge, 1.0)])
    summary = run_best_of_n(store, FakeEngine(reply=seeded_reply), prompts[:2], reward,
                            options=BestOfNOptions(n=3, split="all", max_tokens=16), reward_spec="judge",
                            log=lambda _: None)
    rows = store.fetch("SELECT key, run_id, kind, model FROM generations WHERE stage = 'judge'")
    assert judge_engine.choice_requests and summary.selected == 2
    assert {r["key"] for r in rows} == {r.key for r in judge_engine.choice_requests}
    assert all(r["run_id"] == summary.run_id and r["kind"] == "choice" and r["model"] == "fake-judge" for r in rows)
    (tries,) = store.fetch("SELECT count(*) AS n FROM attempts WHERE stage = 'judge' AND run_id = ?",
                           [summary.run_id])
    assert tries["n"] == len(judge_engine.choice_requests)

    # The RL monitor's judge is often the reward's own: bound twice, it records once and unbinds cleanly.
    with Writer(store) as writer, reward.recorded_in(writer, "run-twice", judge):
        judge.score(RewardBatch([[{"role": "user", "content": "q"}]], ["a fresh answer"], ["p-new"], [True]))
    assert store.fetch("SELECT count(*) AS n FROM generations WHERE run_id = 'run-twice'")[0]["n"] == 1
    judge.score(RewardBatch([[{"role": "user", "content": "q"}]], ["unbound now"], ["p-new"], [True]))
    assert store.fetch("SELECT count(*) AS n FROM generations WHERE stage = 'judge'")[0]["n"] == len(rows) + 1
