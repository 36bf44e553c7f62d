"""The engines' scoring capability (``score``: a continuation's token log-probs given a chat conversation) on the
tiny random model, the recorder's rows for it and their replay, and one call per distinct request.

The OpenAI engine's scoring is tested against the fake server (openai_fakes.py) in test_openai_choices.py and
against a real vLLM server in test_judge_vllm.py.
"""

from __future__ import annotations

import asyncio

import pytest
from tiny_model import make_tiny_model_dir

from rlaif.engines.base import ScoreRequest, run_all
from rlaif.engines.fake import FakeEngine
from rlaif.judge.calls import SharedCalls

CONVO = ({"role": "user", "content": "tell me a story about the river"},)
LONG = ({"role": "user", "content": "the river and the mountain and the old stone bridge " * 6},)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from rlaif.engines.transformers_engine import TransformersEngine

    folder = make_tiny_model_dir(tmp_path_factory.getbasetemp() / "tiny-model")  # built once a session
    engine = TransformersEngine(folder, model_name="tiny", batch_size=8, device="cpu")
    yield engine
    asyncio.run(engine.aclose())


def manual(engine, messages, continuation: str) -> list[float]:
    """Teacher forcing by hand: one forward pass over the whole sequence, no batching, no cache."""
    import torch

    tok = engine._tokenizer
    prompt = tok(tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = engine._model(input_ids=torch.tensor([prompt + cont])).logits[0].float().log_softmax(-1)
    return [logits[len(prompt) + j - 1, t].item() for j, t in enumerate(cont)]


def test_transformers_score_is_teacher_forcing(tiny):
    request = ScoreRequest(key="k", messages=CONVO, continuation="the old bridge was red")
    (result,) = run_all([tiny.score(request)])
    expected = manual(tiny, CONVO, request.continuation)
    assert result.ok and result.tokens == len(expected) > 2
    assert result.token_logprobs == pytest.approx(expected, abs=1e-4)
    assert result.prompt_tokens > 0 and result.mean == pytest.approx(sum(expected) / len(expected), abs=1e-4)


def test_batched_scores_with_a_shared_prefix_equal_the_scores_alone(tiny):
    requests = [ScoreRequest(key=f"s{i}", messages=LONG, continuation=c)
                for i, c in enumerate(["cat", "a dog ran far away", "the sun"])]
    alone = [run_all([tiny.score(r)])[0].token_logprobs for r in requests]
    together = [r.token_logprobs for r in run_all([tiny.score(r) for r in requests])]
    for a, t in zip(alone, together):
        assert t == pytest.approx(a, abs=1e-4)


def test_an_empty_continuation_scores_no_tokens(tiny):
    (result,) = run_all([tiny.score(ScoreRequest(key="e", messages=CONVO, continuation=""))])
    assert result.ok and result.token_logprobs == [] and result.mean is None


def test_the_recorder_stores_a_score_row_and_replays_it(tmp_path):
    from rlaif.recording import RecordingEngine
    from rlaif.store import Store, Writer

    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    request = ScoreRequest(key="score-key", messages=CONVO, continuation="a story", stage="judge", prompt_id="p1")
    inner = FakeEngine()
    with Writer(store) as writer:
        recorder = RecordingEngine(inner, writer, run_id="r1", constitution_version="v")
        (first,) = run_all([recorder.score(request)])
    (row,) = store.fetch("SELECT kind, stage, continuation, token_logprobs, completion_tokens, messages "
                         "FROM generations")
    assert row["kind"] == "score" and row["continuation"] == "a story" and row["stage"] == "judge"
    assert row["token_logprobs"] == first.token_logprobs and row["completion_tokens"] == 2
    assert store.fetch("SELECT count(*) AS n FROM attempts")[0]["n"] == 1
    fresh = FakeEngine()
    with Writer(store) as writer:
        replay = RecordingEngine(fresh, writer, run_id="r2", constitution_version="v")
        assert replay.preload(store, ["p1"]) == 1
        (again,) = run_all([replay.score(request)])
    assert again.token_logprobs == first.token_logprobs and fresh.score_requests == [] and replay.replayed == 1


def test_identical_requests_share_one_engine_call():
    inner = FakeEngine()
    shared = SharedCalls(inner)
    request = ScoreRequest(key="same", messages=CONVO, continuation="x y")
    results = run_all([shared.score(request) for _ in range(5)])
    assert len(inner.score_requests) == 1 and all(r.token_logprobs == results[0].token_logprobs for r in results)
    failing = SharedCalls(FakeEngine().fail("bad"))
    bad = ScoreRequest(key="bad", messages=CONVO, continuation="x")
    run_all([failing.score(bad)])
    run_all([failing.score(bad)])
    assert len(failing.inner.score_requests) == 2  # a failure is not kept: the next call tries again
