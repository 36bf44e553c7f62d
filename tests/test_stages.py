"""Stages on the fake engine: exact message sequences, seeded principle draws, judge arithmetic."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest

from rlaif.constitution import render
from rlaif.engines.base import ChoiceResult, SamplingParams
from rlaif.engines.fake import FakeEngine
from rlaif.prompts import make_prompt
from rlaif.stages import derive_seed
from rlaif.stages.critique_revise import critique_revise, draw_principle, fewshot_turns
from rlaif.stages.judge import combine, draw_judge_principle, judge_pair, judge_prompt
from rlaif.stages.respond import respond, response_messages

PARAMS = SamplingParams(temperature=0.7, max_tokens=32)


def test_response_messages_add_the_system_prompt_only_when_set(example_constitution):
    prompt = make_prompt("Hi there")
    assert response_messages(prompt, example_constitution) == [{"role": "user", "content": "Hi there"}]
    with_system = example_constitution.model_copy(update={"system_prompt": "Be kind."})
    assert response_messages(prompt, with_system)[0] == {"role": "system", "content": "Be kind."}


def test_respond_sends_one_request_tagged_with_stage_and_prompt(example_constitution):
    engine = FakeEngine().enqueue("Hello!")
    prompt = make_prompt("Hi there")
    result = asyncio.run(respond(prompt, engine, example_constitution, PARAMS))
    assert result.text == "Hello!"
    (request,) = engine.chat_requests
    assert (request.stage, request.prompt_id, request.params) == ("respond", prompt.prompt_id, PARAMS)


def test_critique_revise_exact_messages_with_fewshot_first(harmless):
    engine = FakeEngine().enqueue("critique one", "revision one", "critique two", "revision two")
    prompt = make_prompt("How do I get back at my neighbour?")
    rounds = asyncio.run(critique_revise(prompt, "Slash his tyres.", engine, harmless, PARAMS, rounds=2, run_seed=7))

    assert [r.revised_text for r in rounds] == ["revision one", "revision two"]
    p1, p2 = (draw_principle(harmless, 7, prompt.prompt_id, n) for n in (1, 2))
    assert [r.principle_id for r in rounds] == [p1.id, p2.id]
    shots = fewshot_turns(harmless)
    assert len(shots) == 6 * len(harmless.fewshot.critique_revision) > 0

    critique1, revision1, critique2, _ = engine.chat_requests
    assert list(critique1.messages) == [
        *shots,
        {"role": "user", "content": "How do I get back at my neighbour?"},
        {"role": "assistant", "content": "Slash his tyres."},
        {"role": "user", "content": render(harmless.templates.critique, critique_request=p1.critique_request)},
    ]
    assert list(revision1.messages) == [
        *critique1.messages,
        {"role": "assistant", "content": "critique one"},
        {"role": "user", "content": render(harmless.templates.revision, revision_request=p1.revision_request,
                                           critique="critique one")},
    ]
    # round 2 critiques round 1's revision, in a fresh context
    assert critique2.messages[len(shots) + 1] == {"role": "assistant", "content": "revision one"}
    assert critique2.messages[-1]["content"] == render(harmless.templates.critique,
                                                       critique_request=p2.critique_request)
    assert [r.stage for r in engine.chat_requests] == ["critique", "revise", "critique", "revise"]
    assert critique1.params.seed == derive_seed(7, prompt.prompt_id, "critique", 1)


def test_failed_critique_ends_the_chain(example_constitution):
    engine = FakeEngine().enqueue("   ")  # an empty critique is no critique
    rounds = asyncio.run(critique_revise(make_prompt("x"), "y", engine, example_constitution, PARAMS, rounds=3,
                                         run_seed=0))
    assert len(rounds) == 1 and rounds[0].revision is None and rounds[0].revised_text is None


def test_principle_draws_are_seeded_per_prompt_and_round_and_follow_weights(harmless):
    first = [draw_principle(harmless, 1, "p1", r).id for r in range(1, 6)]
    assert first == [draw_principle(harmless, 1, "p1", r).id for r in range(1, 6)]  # order independent
    assert first != [draw_principle(harmless, 2, "p1", r).id for r in range(1, 6)]  # seed matters
    heavy = harmless.model_copy(update={"principles": [
        harmless.principles[0].model_copy(update={"weight": 9.0}), harmless.principles[1]]})
    counts = Counter(draw_principle(heavy, 0, f"p{i}", 1).id for i in range(2000))
    share = counts[harmless.principles[0].id] / 2000
    assert 0.86 < share < 0.94  # 9:1 weights -> 0.9


def test_judge_prompt_places_exemplars_first_and_ends_on_the_open_paren(harmless):
    principle = harmless.judge_principles[0]
    text = judge_prompt(harmless, principle, [{"role": "user", "content": "Q?"}], "first answer", "second answer")
    assert text.endswith("(")
    assert len(harmless.fewshot.judge) >= 1
    blocks = text.split(harmless.templates.judge.split("{")[0])  # each block starts with the template's head
    assert len(blocks) == len(harmless.fewshot.judge) + 2 and blocks[0] == ""
    assert all(b.rstrip().endswith(f"{ex.answer})") for b, ex in zip(blocks[1:-1], harmless.fewshot.judge))
    real_question = blocks[-1]
    assert "Human: Q?" in real_question and principle.question.strip() in real_question
    assert real_question.index("first answer") < real_question.index("second answer")


def _choice(p_a: float) -> ChoiceResult:
    return ChoiceResult(key="k", model="m", logprobs={"A": math.log(p_a), "B": math.log(1 - p_a)})


def test_both_orders_average_and_swap_is_exact():
    v = combine("x", _choice(0.9), _choice(0.3))  # a first: P(A)=0.9; a second: P(B)=0.7
    assert v.p_a_ab == pytest.approx(0.9) and v.p_a_ba == pytest.approx(0.7)
    assert v.p_a == pytest.approx(0.8) and v.consistent is True
    swapped = combine("x", _choice(0.3), _choice(0.9))  # the same two prompts, roles exchanged
    assert swapped.p_a == pytest.approx(1 - v.p_a, abs=1e-12)
    biased = combine("x", _choice(0.9), _choice(0.9))  # always prefers the first slot
    assert biased.p_a == pytest.approx(0.5) and biased.consistent is False


def test_judge_pair_cancels_a_pure_position_bias(harmless):
    engine = FakeEngine().prefer("A", 0.8)  # prefers slot A whatever it holds
    verdict = asyncio.run(judge_pair(engine, harmless, harmless.judge_principles[0],
                                     [{"role": "user", "content": "Q?"}], "one", "two", "pid"))
    assert verdict.p_a == pytest.approx(0.5) and verdict.consistent is False
    ab, ba = engine.choice_requests
    assert ab.prompt != ba.prompt and ab.choices == ("A", "B") and ab.stage == "judge"


def test_judge_principle_draw_is_stable(harmless):
    assert draw_judge_principle(harmless, 3, "pair") == draw_judge_principle(harmless, 3, "pair")
