"""The AI judge on the fake engine: prompts, the probability arithmetic of every mode, fallbacks, parse failures,
principle ensembles, pairing and the rows it stores. No model here: all of it runs in well under a second."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from rlaif.engines.base import ChoiceRequest, ChoiceResult, content_hash
from rlaif.engines.fake import FakeEngine
from rlaif.judge import arithmetic as ar
from rlaif.judge.config import JudgeConfig
from rlaif.judge.pairing import Candidate, Pair, all_pairs, candidate_pairs, pair_id, revision_pairs
from rlaif.judge.prompts import framed_messages, framings
from rlaif.judge.rows import comparison_rows
from rlaif.stages.judge import draw_judge_principle, draw_judge_principles, judge, judge_pair

Q = [{"role": "user", "content": "How do I boil an egg?"}]
GOOD = "Boil the egg for six minutes, then cool it in cold water."
BAD = "The Eiffel Tower is in Paris."


def make(x: str = GOOD, y: str = BAD, messages=Q) -> Pair:
    return Pair.make("pid", messages, Candidate(x, "sample:0", "policy"), Candidate(y, "sample:1", "policy"))


def run(coro):
    return asyncio.run(coro)


def lopsided(p_first_slot: float, p_good: float):
    """A choice rule: P(A) = p_first_slot when GOOD is not on the page, else the slot holding GOOD gets p_good."""
    def rule(request: ChoiceRequest) -> dict[str, float]:
        text = request.prompt.rsplit("Options:", 1)[-1]
        if GOOD not in text:
            return {"A": math.log(p_first_slot), "B": math.log(1 - p_first_slot)}
        good_first = text.index(GOOD) < text.index(BAD)
        p_a = p_good if good_first else 1 - p_good
        return {"A": math.log(p_a), "B": math.log(1 - p_a)}
    return rule


# --- identity and the exact swap -----------------------------------------------------------------------------


def test_pair_identity_and_principle_draws_do_not_depend_on_the_order(harmless):
    assert pair_id("pid", GOOD, BAD) == pair_id("pid", BAD, GOOD) == make().pair_id == make(BAD, GOOD).pair_id
    assert make(BAD, GOOD).swapped != make(GOOD, BAD).swapped
    assert (make(BAD, GOOD).a.text, make(BAD, GOOD).b.text) == (make().a.text, make().b.text)
    draws = draw_judge_principles(harmless, 3, make().pair_id, 4)
    assert draws == draw_judge_principles(harmless, 3, make(BAD, GOOD).pair_id, 4)
    assert len({p.id for p in draws}) == 4 and draws[0] == draw_judge_principle(harmless, 3, make().pair_id)


@pytest.mark.parametrize("mode", ["choice", "cot", "score", "contrast"])
def test_judging_b_a_gives_exactly_one_minus_p_a_b(harmless, mode):
    engine = FakeEngine()  # log-probs that depend on the whole prompt, so no reading is a symmetric 0.5
    engine.choice_rule = lambda r: {c: -int(content_hash(r.prompt, c)[:4], 16) / 200000 for c in r.choices}
    engine.score_rule = lambda r: [-int(content_hash(list(r.messages), r.continuation)[:4], 16) / 200000]
    config = JudgeConfig(mode=mode, principles=2)
    ab = run(judge_pair(engine, harmless, harmless.judge_principles[0], Q, GOOD, BAD, "pid")) \
        if mode == "choice" else None
    forward, backward = (run(judge(engine, harmless, make(x, y), config=config)) for x, y in ((GOOD, BAD), (BAD, GOOD)))
    assert forward.pair.pair_id == backward.pair.pair_id
    for v in forward.verdicts:
        assert v.status == "ok" and v.p_a is not None and 0 < v.p_a < 1 and abs(v.p_a - 0.5) > 1e-6
    # the verdicts are about the canonical pair; seen from the caller's order they are exact complements
    as_called = [v.swapped() if forward.pair.swapped else v for v in forward.verdicts]
    as_swapped = [v.swapped() if backward.pair.swapped else v for v in backward.verdicts]
    for x, y in zip(as_called, as_swapped):
        assert y.p_a == 1 - x.p_a and x.p_a == 1 - y.p_a  # equality, not a tolerance
    if ab is not None:
        ba = run(judge_pair(engine, harmless, harmless.judge_principles[0], Q, BAD, GOOD, "pid"))
        assert ba.p_a == 1 - ab.p_a and ba.p_a_ab == 1 - ab.p_a_ba


def test_snap_makes_the_complement_exact():
    for p in (0.1, 0.3, 1 / 3, 0.7, 0.9, 1e-17, 0.5 - 1e-16, 0.123456789):
        q = ar.snap(p)
        assert abs(q - p) <= 1e-16 and 1 - (1 - q) == q


# --- choice mode -------------------------------------------------------------------------------------------


def test_choice_mode_reads_both_orders_and_stores_consistency_and_gap(harmless):
    engine = FakeEngine()
    engine.choice_rule = lopsided(0.5, 0.8)  # prefers whichever slot holds the good answer, 0.8
    verdict = run(judge(engine, harmless, make(), config=JudgeConfig())).verdicts[0]
    good_is_a = make().a.text == GOOD
    assert verdict.p_a == pytest.approx(0.8 if good_is_a else 0.2)
    assert verdict.consistent is True and verdict.order_gap == pytest.approx(0.0, abs=1e-12)
    assert [r.stage for r in engine.choice_requests] == ["judge", "judge"]
    assert all(r.choices == ("A", "B") for r in engine.choice_requests)


def test_position_bias_cancels_and_shows_as_inconsistent(harmless):
    engine = FakeEngine().prefer("A", 0.9)  # always slot A
    verdict = run(judge(engine, harmless, make())).verdicts[0]
    assert verdict.p_a == pytest.approx(0.5) and verdict.consistent is False
    assert verdict.order_gap == pytest.approx(0.8)


def test_both_orders_and_every_principle_share_the_prefix_up_to_the_first_option(harmless):
    engine = FakeEngine()
    run(judge(engine, harmless, make(), config=JudgeConfig(principles=3)))
    texts = [r.prompt for r in engine.choice_requests]
    assert len(texts) == 6
    shared = texts[0][: texts[0].rindex("(A) ")]
    assert all(t.startswith(shared) for t in texts) and "How do I boil an egg?" in shared
    questions = {p.question.strip() for p in harmless.judge_principles}
    assert not any(q in shared[-400:] for q in questions)  # the principle's question comes after the options


def test_ensemble_draws_m_principles_and_stores_each(harmless):
    engine = FakeEngine().prefer("A", 0.7)
    judgement = run(judge(engine, harmless, make(), config=JudgeConfig(principles=3), run_seed=5))
    assert [v.principle_id for v in judgement.verdicts] == \
        [p.id for p in draw_judge_principles(harmless, 5, make().pair_id, 3)]
    rows = comparison_rows(judgement, run_id="r", constitution=harmless, judge_engine="fake", judge_model="m")
    assert len({r["comparison_id"] for r in rows}) == 3 and {r["mode"] for r in rows} == {"choice"}
    with pytest.raises(Exception, match="principles must be between 1 and 6"):
        draw_judge_principles(harmless, 0, "x", 7)


# --- fallbacks and failures ----------------------------------------------------------------------------------


def test_an_engine_without_logprobs_gives_a_vote_never_a_probability(harmless):
    engine = FakeEngine()
    engine.choice_rule, engine.structured = lopsided(0.5, 0.9), True
    verdict = run(judge(engine, harmless, make())).verdicts[0]
    assert verdict.method == "structured" and verdict.p_a is None and verdict.p_a_ab is None
    assert verdict.vote_a == (1.0 if make().a.text == GOOD else 0.0) and verdict.consistent is True
    row = comparison_rows(run(judge(engine, harmless, make())), run_id="r", constitution=harmless,
                          judge_engine="fake", judge_model="m")[0]
    assert row["p_a"] is None and row["vote_a"] == verdict.vote_a and row["method"] == "structured"


def test_an_unreadable_answer_is_a_row_with_nulls_and_the_raw_output(harmless):
    engine = FakeEngine()
    engine.structured, engine.structured_output = True, "Neither, really."
    judgement = run(judge(engine, harmless, make()))
    verdict = judgement.verdicts[0]
    assert verdict.status == "parse_failed" and verdict.p_a is None and verdict.vote_a is None
    (row,) = comparison_rows(judgement, run_id="r", constitution=harmless, judge_engine="fake", judge_model="m")
    assert row["status"] == "parse_failed" and "Neither, really." in row["raw_output"]
    assert row["p_a"] is None and row["p_a_ab"] is None and row["consistent"] is None
    # log-probs that rank no choice at all are no probability either
    nothing = ChoiceResult(key="k", model="m", logprobs={"A": None, "B": None})
    assert ar.slot_probability(nothing, "A") is None and nothing.probabilities() == {}


def test_an_engine_failure_is_no_row_so_the_next_run_retries(harmless):
    engine = FakeEngine().fail(stages=("judge",))
    judgement = run(judge(engine, harmless, make()))
    assert judgement.verdicts[0].status == "failed" and judgement.verdicts[0].error == "fake failure"
    assert comparison_rows(judgement, run_id="r", constitution=harmless, judge_engine="fake", judge_model="m") == []


# --- chain of thought --------------------------------------------------------------------------------------


def test_cot_reads_the_letter_after_the_rationale_and_clamps_it(harmless):
    engine = FakeEngine().enqueue("Because of reasons one.", "Because of reasons two.")
    engine.choice_rule = lopsided(0.5, 0.99)
    verdict = run(judge(engine, harmless, make(), config=JudgeConfig(mode="cot"))).verdicts[0]
    assert {verdict.p_a_ab, verdict.p_a_ba} <= {0.4, 0.6} and verdict.p_a in (0.4, 0.6)
    assert {verdict.rationale_ab, verdict.rationale_ba} == {"Because of reasons one.", "Because of reasons two."}
    chat = engine.chat_requests[0]
    assert chat.params.temperature == 0.0 and chat.messages[0]["content"].endswith("say which response is better.")
    read = engine.choice_requests[0].prompt
    assert read.startswith(chat.messages[0]["content"]) and read.endswith("So the answer is: (")
    assert "Because of reasons" in read
    assert ar.clamp(0.999) == 0.6 and ar.clamp(0.01) == 0.4 and ar.clamp(0.55) == 0.55


# --- direct score (d-RLAIF) --------------------------------------------------------------------------------


def test_score_expectation_separates_1_from_10():
    # next-token P("1") = 0.5 includes P("10") = 0.3: "1" as a whole answer is only 0.2
    probs = {"1": 0.5, "10": 0.3, "5": 0.5}
    logprobs = {k: math.log(v) for k, v in probs.items()}
    assert ar.exclusive_masses(probs) == pytest.approx({"1": 0.2, "10": 0.3, "5": 0.5})
    assert ar.score_expectation(logprobs) == pytest.approx((1 * 0.2 + 10 * 0.3 + 5 * 0.5) / 1.0)
    assert ar.score_expectation({"1": None, "2": None}) is None


def test_score_mode_scores_each_response_alone_and_compares_through_a_logistic(harmless):
    engine = FakeEngine()
    engine.choice_rule = lambda r: {c: (0.0 if (c == "9") == (GOOD in r.prompt) and c in ("9", "2") else -30.0)
                                    for c in r.choices}
    config = JudgeConfig(mode="score", score_temperature=2.0)
    verdict = run(judge(engine, harmless, make(), config=config)).verdicts[0]
    good, bad = (verdict.score_a, verdict.score_b) if make().a.text == GOOD else (verdict.score_b, verdict.score_a)
    assert good == pytest.approx(9.0) and bad == pytest.approx(2.0)
    assert verdict.p_a == ar.logistic(verdict.score_a - verdict.score_b, 2.0)
    assert verdict.consistent is None and verdict.order_gap is None  # one response at a time: no order
    assert all(r.choices == tuple(str(s) for s in range(1, 11)) for r in engine.choice_requests)
    assert all(r.prompt.endswith("Rating: (") and r.prompt.count("<<<") == 2 for r in engine.choice_requests)


def test_score_response_is_the_function_rewards_use(harmless):
    from rlaif.judge.modes import score_response

    engine = FakeEngine()
    engine.choice_rule = lambda r: {c: (0.0 if c == "7" else -50.0) for c in r.choices}
    score, result = run(score_response(engine, harmless, harmless.judge_principles[0], Q, GOOD))
    assert score == pytest.approx(7.0) and result.ok


# --- likelihood contrast -----------------------------------------------------------------------------------


def test_contrast_scores_each_response_under_framing_and_baseline(harmless):
    engine = FakeEngine()
    verdict = run(judge(engine, harmless, make(), config=JudgeConfig(mode="contrast"))).verdicts[0]
    assert verdict.method == "likelihood" and len(engine.score_requests) == 4
    # both framings keep the request, so only the principle's statement and contrary move a score
    # (tests/test_judge_principles.py shows them doing so)
    assert verdict.p_a == ar.logistic(verdict.score_a - verdict.score_b, JudgeConfig().contrast_temperature)
    framing, baseline = framings(harmless, harmless.judge_principle(verdict.principle_id))
    framed = framed_messages(framing, Q, guard=_guard(harmless))
    assert any(r.messages == framed for r in engine.score_requests)
    assert {r.continuation for r in engine.score_requests} == {GOOD, BAD}


def _guard(constitution):
    from rlaif.judge.defences import Guard

    return Guard.build(constitution, ("<|im_end|>",))


def test_framed_messages_replace_the_last_user_turn_and_the_system_turn():
    from rlaif.judge.spec import Framing

    convo = [{"role": "system", "content": "old"}, {"role": "user", "content": "one"},
             {"role": "assistant", "content": "two"}, {"role": "user", "content": "three"}]
    out = framed_messages(Framing(system="S", user="Q: {prompt}"), convo, guard=_guard_plain())
    assert list(out) == [{"role": "system", "content": "S"}, {"role": "user", "content": "one"},
                         {"role": "assistant", "content": "two"}, {"role": "user", "content": "Q: three"}]
    assert framed_messages(Framing(user="Say something."), convo[1:2], _guard_plain())[-1]["content"] == \
        "Say something."


def _guard_plain():
    from rlaif.judge.defences import Guard

    return Guard(special_tokens=())


def test_modes_without_their_templates_say_which_field_is_missing(example_constitution):
    bare = example_constitution.model_copy(update={"judge": example_constitution.judge.model_copy(
        update={"cot": None, "contrast": None})})
    with pytest.raises(Exception, match=r"no judge\.cot, which --mode cot needs"):
        run(judge(FakeEngine(), bare, make(), config=JudgeConfig(mode="cot")))
    with pytest.raises(Exception, match=r"judge\.contrast .*--mode contrast"):
        run(judge(FakeEngine(), bare, make(), config=JudgeConfig(mode="contrast")))


# --- pairing -------------------------------------------------------------------------------------------------


def test_all_vs_all_pairing_with_a_seeded_cap():
    assert all_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    capped = all_pairs(6, 5, seed=1, salt="p")
    assert len(capped) == 5 and capped == all_pairs(6, 5, seed=1, salt="p") and set(capped) <= set(all_pairs(6))
    assert capped != all_pairs(6, 5, seed=2, salt="p")
    cands = [Candidate(t, f"sample:{i}") for i, t in enumerate(["x", "y", "x", "z"])]
    pairs = candidate_pairs("p", Q, cands)
    assert len(pairs) == 3 and all(p.a.text != p.b.text for p in pairs)  # the repeated "x" is one candidate
    assert {p.a.source for p in pairs if "x" in (p.a.text, p.b.text)} >= {"sample:0"}


def test_revision_pairs_take_each_chains_final_revision():
    rows = [
        {"chain_id": "c1", "round": 1, "prompt_id": "p", "messages": Q, "original": "o", "revision": "r1",
         "model": "m"},
        {"chain_id": "c1", "round": 2, "prompt_id": "p", "messages": Q, "original": "o", "revision": "r2",
         "model": "m"},
        {"chain_id": "c2", "round": 1, "prompt_id": "q", "messages": Q, "original": "same", "revision": "same",
         "model": "m"},
    ]
    (pair,) = revision_pairs(rows)
    assert {pair.a.text, pair.b.text} == {"o", "r2"} and pair.chain_id == "c1"
    assert {pair.a.source, pair.b.source} == {"original", "revision"}


def test_comparison_rows_are_canonical_and_carry_lineage(harmless):
    engine = FakeEngine().prefer("A", 0.6)
    judgement = run(judge(engine, harmless, make(BAD, GOOD), config=JudgeConfig(mode="choice")))
    (row,) = comparison_rows(judgement, run_id="r", constitution=harmless, judge_engine="fake", judge_model="m")
    assert (row["response_a"], row["response_b"]) == tuple(sorted((GOOD, BAD)))
    assert row["policy_model"] == "policy" and row["judge_engine"] == "fake"
    assert json.loads(row["judge_keys"]).keys() == {"ab", "ba"} and row["key_ab"] and row["key_ba"]
    assert json.loads(row["judge_config"])["mode"] == "choice"
