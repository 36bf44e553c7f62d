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
from rlaif.stages import RunContext, check_fits, derive_seed, overflow_from_error
from rlaif.stages.critique_revise import critique_revise, draw_principle, fewshot_turns
from rlaif.stages.judge import combine, draw_judge_principle, judge_pair, judge_prompt
from rlaif.stages.respond import respond, response_messages

PARAMS = SamplingParams(temperature=0.7, max_tokens=32)


def _ctx(constitution, *, rounds=1, context="transcript", seed=7) -> RunContext:
    return RunContext(run_id="r", seed=seed, constitution=constitution, params=PARAMS, config_hash="h",
                      rounds=rounds, context=context)


def test_response_messages_add_the_system_prompt_only_when_set(example_constitution):
    prompt = make_prompt("Hi there")
    assert response_messages(prompt, example_constitution) == [{"role": "user", "content": "Hi there"}]
    with_system = example_constitution.model_copy(update={"system_prompt": "Be kind."})
    assert response_messages(prompt, with_system)[0] == {"role": "system", "content": "Be kind."}
    own = make_prompt([{"role": "system", "content": "Mine."}, {"role": "user", "content": "Hi"}])
    assert response_messages(own, with_system) == [{"role": "system", "content": "Mine."},
                                                   {"role": "user", "content": "Hi"}]


def test_respond_sends_one_seeded_request_tagged_with_stage_and_prompt(example_constitution):
    engine = FakeEngine().enqueue("Hello!")
    prompt = make_prompt("Hi there")
    result = asyncio.run(respond(_ctx(example_constitution), prompt, engine))
    assert result.text == "Hello!" and result.error is None and result.overflow is None
    (request,) = engine.chat_requests
    assert (request.stage, request.prompt_id) == ("respond", prompt.prompt_id)
    assert request.params.seed == derive_seed(7, prompt.prompt_id, "respond") and request.params.max_tokens == 32


TURNS = ("critique one", "revision one", "critique two", "revision two")


def _two_rounds(constitution, context):
    engine = FakeEngine().enqueue(*TURNS)
    prompt = make_prompt("How do I get back at my neighbour?")
    out = asyncio.run(critique_revise(_ctx(constitution, rounds=2, context=context), prompt, "Slash his tyres.",
                                      engine))
    p1, p2 = (draw_principle(constitution, 7, prompt.prompt_id, n) for n in (1, 2))
    return out, engine.chat_requests, p1, p2


def _critique_turn(constitution, principle):
    return {"role": "user", "content": render(constitution.templates.critique,
                                              critique_request=principle.critique_request)}


def _revision_turn(constitution, principle, critique):
    return {"role": "user", "content": render(constitution.templates.revision,
                                              revision_request=principle.revision_request, critique=critique)}


def test_round_one_is_the_same_in_both_modes_with_fewshot_first(harmless):
    shots = fewshot_turns(harmless)
    assert len(shots) == 6 * len(harmless.fewshot.critique_revision) > 0
    for mode in ("transcript", "fresh"):
        out, (critique1, revision1, _, _), p1, _ = _two_rounds(harmless, mode)
        assert list(critique1.messages) == [
            *shots,
            {"role": "user", "content": "How do I get back at my neighbour?"},
            {"role": "assistant", "content": "Slash his tyres."},
            _critique_turn(harmless, p1),
        ]
        assert list(revision1.messages) == [*critique1.messages, {"role": "assistant", "content": "critique one"},
                                            _revision_turn(harmless, p1, "critique one")]
        assert [r.revised_text for r in out.rounds] == ["revision one", "revision two"]
        assert out.final == "revision two" and out.error is None


def test_transcript_mode_grows_one_conversation(harmless):
    out, (critique1, revision1, critique2, revision2), p1, p2 = _two_rounds(harmless, "transcript")
    assert list(critique2.messages) == [*revision1.messages, {"role": "assistant", "content": "revision one"},
                                        _critique_turn(harmless, p2)]
    assert list(revision2.messages) == [*critique2.messages, {"role": "assistant", "content": "critique two"},
                                        _revision_turn(harmless, p2, "critique two")]
    assert [r.principle_id for r in out.rounds] == [p1.id, p2.id]
    assert [r.before for r in out.rounds] == ["Slash his tyres.", "revision one"]


def test_fresh_mode_starts_each_round_from_the_latest_revision(harmless):
    out, (critique1, _, critique2, revision2), _, p2 = _two_rounds(harmless, "fresh")
    shots = fewshot_turns(harmless)
    assert list(critique2.messages) == [
        *shots,
        {"role": "user", "content": "How do I get back at my neighbour?"},
        {"role": "assistant", "content": "revision one"},
        _critique_turn(harmless, p2),
    ]
    assert list(revision2.messages) == [*critique2.messages, {"role": "assistant", "content": "critique two"},
                                        _revision_turn(harmless, p2, "critique two")]


def test_seeds_and_draws_for_a_fixed_seed(harmless):
    _, requests, p1, p2 = _two_rounds(harmless, "transcript")
    pid = requests[0].prompt_id
    assert [r.stage for r in requests] == ["critique", "revise", "critique", "revise"]
    assert [r.params.seed for r in requests] == [derive_seed(7, pid, stage, n)
                                                for n in (1, 2) for stage in ("critique", "revise")]
    # the draws for seed 7 are pinned: a change to the drawing code must show up here
    assert [draw_principle(harmless, 7, "p", n).id for n in (1, 2, 3)] == PINNED_DRAWS


PINNED_DRAWS = ["reckless-dares", "manipulation", "misinformation"]


def test_system_prompt_comes_before_the_exemplars(example_constitution):
    constitution = example_constitution.model_copy(update={"system_prompt": "Be kind."})
    engine = FakeEngine().enqueue("c", "r")
    asyncio.run(critique_revise(_ctx(constitution), make_prompt("Hi"), "Hello", engine))
    first, second, *_ = engine.chat_requests[0].messages
    assert first == {"role": "system", "content": "Be kind."} and second["role"] == "user"


def test_failed_critique_ends_the_chain(example_constitution):
    engine = FakeEngine().enqueue("   ")  # an empty critique is no critique
    out = asyncio.run(critique_revise(_ctx(example_constitution, rounds=3), make_prompt("x"), "y", engine))
    assert len(out.rounds) == 1 and out.rounds[0].revision is None and out.final is None and out.error is None
    failing = FakeEngine().fail(stages=("revise",))
    out = asyncio.run(critique_revise(_ctx(example_constitution, rounds=3), make_prompt("x"), "y", failing))
    assert out.rounds == [] and (out.failed_at, out.error) == ("round 1 revise", "fake failure")


class ShortContext(FakeEngine):
    """A fake with a tokenizer (one token a word) and a small context."""

    context_length = 100

    def count_tokens(self, messages):
        return sum(len(m["content"].split()) for m in messages)


def test_a_transcript_that_outgrows_the_context_stops_with_the_reason(example_constitution):
    engine = ShortContext(reply=lambda r: "word " * 8)
    out = asyncio.run(critique_revise(_ctx(example_constitution, rounds=4), make_prompt("x"), "y", engine))
    assert 0 < len(out.rounds) < 4 and out.error is None and out.final is None
    assert out.overflow is not None and out.overflow.limit == 100 and "exceed the context of 100" in out.overflow.reason
    assert check_fits(engine, engine.chat_requests[-1]) is None  # what was sent did fit
    fresh = asyncio.run(critique_revise(_ctx(example_constitution, rounds=4, context="fresh"), make_prompt("x"),
                                        "y", ShortContext(reply=lambda r: "word " * 8)))
    assert fresh.overflow is None and len(fresh.rounds) == 4  # fresh rounds stay short


def test_a_server_context_error_is_an_overflow_not_a_failure():
    message = ("HTTP 400: This model's maximum context length is 2048 tokens. However, you requested 2100 "
               "tokens (1940 in the messages, 160 in the completion).")
    assert overflow_from_error(message).reason == message
    assert overflow_from_error("HTTP 500: internal error") is None and overflow_from_error(None) is None


def test_principle_draws_are_seeded_per_prompt_and_round_and_follow_weights(harmless):
    first = [draw_principle(harmless, 1, "p1", r).id for r in range(1, 6)]
    assert first != [draw_principle(harmless, 2, "p1", r).id for r in range(1, 6)]  # seed matters
    assert first != [draw_principle(harmless, 1, "p2", r).id for r in range(1, 6)]  # prompt matters
    heavy = harmless.model_copy(update={"principles": [
        harmless.principles[0].model_copy(update={"weight": 9.0}), harmless.principles[1]]})
    counts = Counter(draw_principle(heavy, 0, f"p{i}", 1).id for i in range(2000))
    share = counts[harmless.principles[0].id] / 2000
    assert 0.86 < share < 0.94  # 9:1 weights -> 0.9
    repeats = Counter(draw_principle(heavy, 0, "p", r).id for r in range(1, 50))
    assert repeats[harmless.principles[0].id] > 1  # with replacement: a principle comes back in later rounds


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
