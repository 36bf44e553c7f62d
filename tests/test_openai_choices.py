"""The OpenAI-compatible engine's choices and scores against the fake server (tests/openai_fakes.py): top
log-probs of the raw prompt, echo and token-by-token reads, prompt log-probs of a continuation, and the fallbacks
of a server without completions or log-probs.
"""

from __future__ import annotations

import math

import pytest
from openai_fakes import FakeServer, engine_for, run

from rlaif.engines.base import ChoiceRequest
from rlaif.engines.openai_engine import choice_tail_logprob

# --- choices ------------------------------------------------------------------------------------------------


def test_choose_reads_top_logprobs_of_the_raw_prompt(server):
    engine = engine_for(server)
    [result] = run(engine, engine.choose(ChoiceRequest(key="k", prompt="The answer is: (", choices=("A", "B"))))
    assert result.ok and result.method == "logprobs" and result.prompt_tokens == 5
    assert result.logprobs == {"A": -0.2, "B": -1.8}
    assert result.probabilities()["A"] == pytest.approx(1 / (1 + math.exp(-1.6)))
    assert server.paths() == ["/v1/completions"] and server.seen[0][2]["prompt"] == "The answer is: ("


def test_choose_scores_choices_outside_the_top_with_an_echo_request(server):
    engine = engine_for(server)
    [result] = run(engine, engine.choose(ChoiceRequest(key="k", prompt="Score: ", choices=("10", "A"))))
    assert result.logprobs == {"10": pytest.approx(-1.0), "A": -0.2}  # two characters of -0.5 each
    echo = [body for _, _, body in server.seen if body.get("echo")]
    assert len(echo) == 1 and echo[0]["prompt"] == "Score: 10"


def test_choose_reads_a_multi_token_choice_token_by_token_before_any_echo(server):
    server.top = {"1": -1.0, "2": -1.5}
    server.top_after = {"Score: 1": {"0": -0.5, ")": -0.2}}
    engine = engine_for(server)
    [result] = run(engine, engine.choose(ChoiceRequest(key="k", prompt="Score: ", choices=("1", "2", "10"))))
    assert result.logprobs == {"1": -1.0, "2": -1.5, "10": -1.5}  # P("1") * P("0" | "1")
    assert [body["prompt"] for _, _, body in server.seen] == ["Score: ", "Score: 1"]
    assert not any(body.get("echo") for _, _, body in server.seen)  # next-token reads only: prefix-cache friendly
    assert len(result.attempts) == 2


def test_score_tokenizes_the_conversation_then_reads_prompt_logprobs(server):
    from rlaif.engines.base import ScoreRequest

    engine = engine_for(server)
    messages = ({"role": "user", "content": "hi"},)
    request = ScoreRequest(key="s", messages=messages, continuation="ok!")
    [first, again] = run(engine, engine.score(request), engine.score(request))
    assert first.ok and first.token_logprobs == [-(ord(c) % 10) / 10 for c in "ok!"]
    assert first.prompt_tokens == len("<user>hi</user><assistant>") and first.tokens == 3
    assert first.mean == pytest.approx(sum(first.token_logprobs) / 3)
    tokenize = [body for _, path, body in server.seen if path == "/tokenize"]
    assert {"messages", "add_generation_prompt"} <= set(tokenize[0]) or {"messages"} <= set(tokenize[1])
    assert any(b.get("add_special_tokens") is False and b.get("prompt") == "ok!" for b in tokenize)
    sent = [body for _, path, body in server.seen if path == "/v1/completions"]
    assert sent[0]["prompt_logprobs"] == 0 and sent[0]["max_tokens"] == 1 and "echo" not in sent[0]
    assert [a.status for a in first.attempts] == ["ok"] * 3
    assert [a.status for a in again.attempts] == ["ok"]  # the same inputs: tokenized once, by the first ask


def test_scores_of_one_conversation_tokenize_it_once(server):
    from rlaif.engines.base import ScoreRequest

    engine = engine_for(server)
    messages = ({"role": "user", "content": "hi"},)
    requests = [ScoreRequest(key=f"s{i}", messages=messages, continuation=c) for i, c in enumerate("abcd")]
    results = run(engine, *(engine.score(r) for r in requests))
    assert all(r.ok and r.tokens == 1 for r in results)
    tokenize = [body for _, path, body in server.seen if path == "/tokenize"]
    assert sum("messages" in b for b in tokenize) == 1 and sum("prompt" in b for b in tokenize) == 4
    assert sum(len(r.attempts) for r in results) == 1 + 4 + 4


def test_score_on_a_server_without_tokenize_is_an_error_result(server):
    from rlaif.engines.base import ScoreRequest

    server.faults.append("400")
    engine = engine_for(server)
    [result] = run(engine, engine.score(ScoreRequest(key="s", messages=({"role": "user", "content": "x"},),
                                                     continuation="")))
    assert not result.ok and result.error.startswith("HTTP 400")


def test_choice_tail_logprob_needs_tokens_that_spell_the_choice():
    assert choice_tail_logprob(["The", " answer", " (", "1", "0"], [None, -1.0, -0.5, -2.0, -0.25], "10") == -2.25
    assert choice_tail_logprob(["The", " answer", " (A"], [None, -1.0, -0.5], "A") is None  # merged with "("
    assert choice_tail_logprob(["AB"], [None], "AB") is None  # the first token is never scored


def test_choose_falls_back_to_chat_top_logprobs_without_completions():
    server = FakeServer(completions=False)
    try:
        engine = engine_for(server)
        request = ChoiceRequest(key="k", prompt="The answer is: (", choices=("A", "B"))
        first, second = run(engine, engine.choose(request)), run(engine, engine.choose(request))
        assert first[0].method == "logprobs" and first[0].logprobs == {"A": -0.2, "B": -1.8}
        assert [a.status for a in first[0].attempts] == ["failed", "ok"]  # the 404 probe is a recorded try
        assert second[0].attempts[0].status == "ok"  # the downgrade is remembered
        assert server.paths() == ["/v1/completions", "/v1/chat/completions", "/v1/chat/completions"]
    finally:
        server.close()


def test_choose_falls_back_to_structured_output_without_logprobs():
    server = FakeServer(completions=False, logprobs=False)
    try:
        engine = engine_for(server)
        [result] = run(engine, engine.choose(ChoiceRequest(key="k", prompt="Pick: (", choices=("A", "B"))))
        assert result.ok and result.method == "structured" and result.logprobs == {"A": None, "B": 0.0}
        assert result.probabilities() == {"A": 0.0, "B": 1.0}
        assert server.seen[-1][2]["structured_outputs"] == {"choice": ["A", "B"]}
    finally:
        server.close()


def test_choose_failure_is_an_error_result(server):
    server.faults.extend(["503"] * 3)
    engine = engine_for(server, max_retries=2)
    [result] = run(engine, engine.choose(ChoiceRequest(key="k", prompt="p", choices=("A", "B"))))
    assert not result.ok and result.error.startswith("HTTP 503") and len(result.attempts) == 3
    assert result.logprobs == {"A": None, "B": None}
