"""The judge against a REAL vLLM CPU server (``-m vllm``): the engine's ``score`` capability checked against the
transformers engine's teacher forcing on the same model, the next-token-only read of a two-token score choice,
and one contrast verdict end to end. Shares the session's server (tests/vllm_fixtures.py)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from rlaif.config import EMBEDDED_MODEL
from rlaif.engines.base import ChoiceRequest, ScoreRequest, run_all
from rlaif.engines.openai_endpoint import prefix_cache_stats
from rlaif.engines.openai_engine import OpenAIEngine

pytestmark = pytest.mark.vllm

CONVO = ({"role": "user", "content": "How do I boil an egg so the yolk stays soft?"},)
ANSWER = "Lower the egg into boiling water, cook it for six minutes, then cool it in cold water."


def run(engine, *coros):
    async def go():
        try:
            return list(await asyncio.gather(*coros))
        finally:
            await engine.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def smol():
    from vllm_fixtures import embedded_model_dir

    from rlaif.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(Path(embedded_model_dir()), model_name=EMBEDDED_MODEL, device="cpu")
    yield engine
    asyncio.run(engine.aclose())


def test_server_scores_match_teacher_forcing_in_transformers(vllm_server, smol):
    request = ScoreRequest(key="egg", messages=CONVO, continuation=ANSWER)
    engine = OpenAIEngine([vllm_server.url], EMBEDDED_MODEL)
    (served,) = run(engine, engine.score(request))
    (local,) = run_all([smol.score(request)])  # the module's engine stays open
    assert served.ok, served.error
    assert served.tokens == local.tokens > 10 and served.prompt_tokens == local.prompt_tokens
    # bf16 (or fp32) on the server against fp32 here: per-token log-probs agree to a few hundredths on average
    assert abs(served.mean - local.mean) < 0.1
    assert [a.status for a in served.attempts] == ["ok", "ok", "ok"]  # two /tokenize calls, one completion


def test_a_two_token_score_is_read_with_next_token_requests_only(vllm_server, smol):
    prompt = "Rate the answer from 1 to 10.\nRating: ("
    request = ChoiceRequest("rating", prompt, tuple(str(s) for s in range(1, 11)))
    engine = OpenAIEngine([vllm_server.url], EMBEDDED_MODEL)
    (served,) = run(engine, engine.choose(request))
    (local,) = run_all([smol.choose(request)])
    assert local.ok, local.error
    assert served.ok and all(v is not None and math.isfinite(v) for v in served.logprobs.values())
    assert len(served.attempts) == 2  # the top-20 read, then one read after "1" for "10": no echo request
    assert served.logprobs["10"] == pytest.approx(local.logprobs["10"], abs=0.3)


def test_a_contrast_verdict_on_the_server_follows_the_principle_as_in_process(vllm_server, smol, harmless):
    # The contrast framings are filled from the principle and keep the request on both sides, so an on-topic
    # against an off-topic answer no longer decides anything; a principle that says "refuse" must. The same
    # verdict in process (fp32) is the reference; 0.94 was measured there for the refusal.
    from test_judge_principles import HELP, REFUSE, _p_refusal, _with_principles

    one = _with_principles(harmless, (REFUSE, HELP))
    engine = OpenAIEngine([vllm_server.url], EMBEDDED_MODEL)
    before = prefix_cache_stats(vllm_server.url)
    try:
        served = _p_refusal(engine, one, "p0")
    finally:
        asyncio.run(engine.aclose())
    local = _p_refusal(smol, one, "p0")
    assert served > 0.5 and local > 0.5, (served, local)
    assert served == pytest.approx(local, abs=0.15)
    assert prefix_cache_stats(vllm_server.url)["queries"] >= before["queries"]
