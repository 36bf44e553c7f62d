"""The judge's rows in a real DuckDB file: pair flags, the preference views (juries included), canary results."""

from __future__ import annotations

import asyncio
import math

import pytest

from rlaif.engines.fake import FakeEngine
from rlaif.judge.canaries import CANARY_EVERY, canaries_due, canary_for, canary_rows, judge_canary, load_canaries
from rlaif.judge.config import JudgeConfig
from rlaif.judge.flags import PairFlagSettings, pair_flags, write_pair_flags
from rlaif.judge.pairing import Candidate, Pair
from rlaif.judge.rows import comparison_rows
from rlaif.prompts import make_prompt
from rlaif.stages.judge import judge
from rlaif.store import Store

PROMPT = make_prompt("How do I boil an egg?")
GOOD = "Boil the egg for six minutes, then cool it in cold water."
BAD = "The Eiffel Tower is in Paris, France."


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "judge.duckdb")
    s.migrate()
    s.insert("prompts", [PROMPT.as_row()])
    return s


def pair(x: str, y: str) -> Pair:
    return Pair.make(PROMPT.prompt_id, PROMPT.messages, Candidate(x, "sample:0", "pol"),
                     Candidate(y, "sample:1", "pol"))


def prefers_good(p: float):
    """A fake judge that gives the slot holding GOOD probability ``p`` (position-free)."""
    def rule(request):
        text = request.prompt.rsplit("Options:", 1)[-1]
        if GOOD not in text:
            return {"A": math.log(0.5), "B": math.log(0.5)}
        p_a = p if GOOD in text.split("(B) <<<")[0] else 1 - p
        return {"A": math.log(p_a), "B": math.log(1 - p_a)}
    return rule


def judged(store: Store, engine: FakeEngine, p: Pair, constitution, *, model: str = "judge", run: str = "r1") -> None:
    engine.model = model
    judgement = asyncio.run(judge(engine, constitution, p, config=JudgeConfig()))
    store.insert("comparisons", comparison_rows(judgement, run_id=run, constitution=constitution,
                                                judge_engine="fake", judge_model=model))


def test_flags_and_the_preference_views(store, harmless):
    clear, weak, biased = FakeEngine(), FakeEngine(), FakeEngine().prefer("A", 0.9)
    clear.choice_rule, weak.choice_rule = prefers_good(0.9), prefers_good(0.52)
    judged(store, clear, pair(GOOD, BAD), harmless)
    judged(store, weak, pair(GOOD, "Eggs are nice " * 40), harmless)  # low margin, and 4x+ longer
    judged(store, biased, pair(GOOD, "Same text."), harmless)  # a pure position bias: tie, inconsistent
    judged(store, clear, pair("Same text.", "same   TEXT."), harmless)
    assert write_pair_flags(store, "r1") > 0
    rows = store.fetch("SELECT response_a, response_b, flags, flagged FROM preference_candidates")
    found = {frozenset((r["response_a"], r["response_b"])): r["flags"] for r in rows}
    assert found == {
        frozenset((GOOD, BAD)): [],
        frozenset((GOOD, "Eggs are nice " * 40)): ["length_ratio", "low_margin"],
        frozenset((GOOD, "Same text.")): ["inconsistent", "length_ratio", "tie"],
        frozenset(("Same text.", "same   TEXT.")): ["identical", "inconsistent", "tie"],
    }
    targets = {r["flag"]: r["target_id"] for r in store.fetch("SELECT flag, target_id FROM row_flags")}
    judgements = {r["judgement_id"] for r in store.fetch("SELECT judgement_id FROM preference_judgements")}
    assert targets["tie"] in judgements and targets["identical"] not in judgements  # verdict vs text flags
    (kept,) = store.fetch("SELECT * FROM preference_dataset")
    assert kept["chosen"] == GOOD and kept["rejected"] == BAD and kept["p_chosen"] == pytest.approx(0.9)
    assert kept["margin"] == pytest.approx(0.8) and kept["consistency"] == 1.0 and kept["order_gap"] == 0.0
    assert kept["chosen_messages"] == [{"role": "assistant", "content": GOOD}]
    assert kept["prompt_messages"] == [{"role": "user", "content": "How do I boil an egg?"}]
    assert kept["mode"] == "choice" and kept["policy_model"] == "pol" and kept["n_principles"] == 1
    assert kept["source_chosen"] == "sample:0" and kept["judge_engine"] == "fake"
    assert write_pair_flags(store, "r1") == 0  # idempotent


def test_thresholds_are_settings(monkeypatch):
    monkeypatch.setenv("RLAIF_PAIR_FLAGS_LOW_MARGIN", "0.5")
    row = {"judgement_id": "j", "pair_id": "p", "response_a": "a b", "response_b": "c d", "decision": 0.7,
           "consistency": 1.0}
    assert [f["flag"] for f in pair_flags([row], PairFlagSettings(), "r")] == ["low_margin"]
    assert pair_flags([row], PairFlagSettings(low_margin=0.1), "r") == []


def test_a_jury_keeps_each_judges_verdict_apart(store, harmless):
    tied, clear = FakeEngine().prefer("A", 0.9), FakeEngine()
    clear.choice_rule = prefers_good(0.8)
    judged(store, tied, pair(GOOD, BAD), harmless, model="judge-1")
    judged(store, clear, pair(GOOD, BAD), harmless, model="judge-2")
    write_pair_flags(store, "r1")
    rows = store.fetch("SELECT judge_model, flags FROM preference_candidates ORDER BY judge_model")
    assert [(r["judge_model"], r["flags"]) for r in rows] == [("judge-1", ["inconsistent", "tie"]),
                                                              ("judge-2", [])]
    assert [r["judge_model"] for r in store.fetch("SELECT judge_model FROM preference_dataset")] == ["judge-2"]


def test_rows_from_before_005_still_make_the_dataset(store):
    store.insert("comparisons", [{
        "comparison_id": "old", "pair_id": "p-old", "run_id": "r0", "prompt_id": PROMPT.prompt_id,
        "principle_id": "x", "response_a": "a", "response_b": "b", "p_a": 0.8, "consistent": True,
        "method": "logprobs", "judge_model": "m", "constitution_name": "c", "constitution_version": "v",
        "created_at": PROMPT.as_row()["created_at"]}])
    (row,) = store.fetch("SELECT chosen, mode, p_chosen FROM preference_dataset")
    assert row == {"chosen": "a", "mode": "choice", "p_chosen": pytest.approx(0.8)}


def test_canaries_are_due_at_the_start_and_every_few_hundred_pairs():
    assert canaries_due(0, 0) == 1 and canaries_due(0, 1) == 0
    assert canaries_due(CANARY_EVERY - 1, 1) == 0 and canaries_due(CANARY_EVERY, 1) == 1
    assert canaries_due(10 * CANARY_EVERY, 3) == 8 and canaries_due(5, 0, every=2) == 3


def test_canary_results_show_a_broken_judge_in_sql(store, harmless):
    canaries = load_canaries()
    assert len(canaries) >= 8 and len({c.id for c in canaries}) == len(canaries)
    assert [canary_for(canaries, n, 7).id for n in range(3)] == [canary_for(canaries, n, 7).id for n in range(3)]
    for seq, engine in enumerate([_knows(canaries), FakeEngine().prefer("A", 0.99)]):
        canary = canary_for(canaries, seq, 0)
        judgement = asyncio.run(judge_canary(engine, harmless, canary, config=JudgeConfig()))
        store.insert("canary_results", canary_rows(canary, judgement, run_id=f"run-{seq}", seq=seq,
                                                   constitution=harmless, judge_engine="fake",
                                                   judge_model="m"))
    rows = store.fetch("SELECT run_id, avg(correct::INT) AS accuracy, avg(p_correct) AS p FROM canary_results "
                       "GROUP BY run_id ORDER BY run_id")
    assert rows[0]["accuracy"] == 1 and rows[0]["p"] > 0.9
    assert rows[1]["p"] == pytest.approx(0.5)  # slot bias only: no signal, and consistent is False
    assert store.fetch("SELECT consistent FROM canary_results WHERE run_id = 'run-1'")[0]["consistent"] is False


def _knows(canaries) -> FakeEngine:
    """A fake judge that knows every canary's answer."""
    better = {(c.pair.a if c.a_is_better else c.pair.b).text for c in canaries}
    engine = FakeEngine()

    def rule(request):
        first = request.prompt.rsplit("(A) <<<", 1)[1].split(">>>", 1)[0]
        p_a = 0.95 if first in better else 0.05
        return {"A": math.log(p_a), "B": math.log(1 - p_a)}

    engine.choice_rule = rule
    return engine


def test_rows_in_the_callers_order_are_turned_to_the_canonical_one(store):
    base = {"pair_id": "p", "run_id": "r0", "prompt_id": PROMPT.prompt_id, "method": "logprobs", "consistent": True,
            "judge_model": "m", "constitution_name": "c", "constitution_version": "v",
            "created_at": PROMPT.as_row()["created_at"]}
    store.insert("comparisons", [  # one principle stored as (z, a), the other as (a, z): both say "a" is better
        {**base, "comparison_id": "1", "principle_id": "x", "response_a": "z", "response_b": "a", "p_a": 0.2,
         "source_a": "revision", "source_b": "original"},
        {**base, "comparison_id": "2", "principle_id": "y", "response_a": "a", "response_b": "z", "p_a": 0.6,
         "source_a": "original", "source_b": "revision"},
    ])
    (row,) = store.fetch("SELECT response_a, p_a, source_a, principles FROM preference_judgements")
    assert row == {"response_a": "a", "p_a": pytest.approx(0.7), "source_a": "original", "principles": ["x", "y"]}
    assert store.fetch("SELECT chosen, source_chosen FROM preference_dataset") == [
        {"chosen": "a", "source_chosen": "original"}]
