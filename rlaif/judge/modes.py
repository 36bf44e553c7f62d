"""The four judge modes. Each builds its requests in one function, calls the engine in another, and reads the
results in a third, so prompts and arithmetic are tested without a model. Every verdict is about the pair's
canonical ``a`` and ``b``.

- ``choice``: the multiple-choice judge of Bai et al. 2022 (arXiv 2212.08073, section 4.1), read from next-token
  log-probs, both orders averaged as Lee et al. 2023 (arXiv 2309.00267, section 2.1.1) do. Kept: the paper's
  question form, soft labels from normalised letter probabilities, few-shot exemplars. Changed: the options come
  before the question (the paper asks first), so both orders and every principle share the longest prefix;
  candidates are fenced (``defences.py``).
- ``cot``: Bai et al.'s chain-of-thought variant: the model writes a rationale, then the letter is read after it
  and clamped to [0.4, 0.6]. Kept: the clamp, the rationale before the answer. Changed: the rationale is a chat
  reply to the question (greedy by default, so reruns agree) and is read back in the raw prompt; each order gets
  its own rationale.
- ``score``: d-RLAIF (Lee et al. 2023, section 2.2.2): a 1-10 rating of one response, E[s] over the ten score
  tokens. Kept: the expectation over score-token probabilities. Changed: two scores become p(a > b) through a
  logistic (``score_temperature``) so they can be compared with the other modes; the score itself is what RL
  rewards use (``score_response``).
- ``contrast``: not in either paper. Each response's per-token log-likelihood given the conversation under the
  principle's framing minus the same under a baseline framing: pointwise mutual information between framing and
  response (with a prompt-free baseline, the domain-conditional PMI of Holtzman et al. 2021, arXiv 2104.08315).
  No letters, so no position bias: it suits small and base models, which cannot follow the multiple-choice form.
"""

from __future__ import annotations

import asyncio
import json

from rlaif.constitution import Constitution, JudgePrinciple
from rlaif.engines.base import (
    ChatRequest,
    ChoiceRequest,
    ChoiceResult,
    Engine,
    Message,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    chat_key,
    choice_key,
    score_key,
)
from rlaif.judge import arithmetic as ar
from rlaif.judge import prompts
from rlaif.judge.config import JudgeConfig
from rlaif.judge.defences import Guard, guard_for
from rlaif.judge.pairing import Pair
from rlaif.judge.verdict import Verdict

STAGE = "judge"
LETTERS = ("A", "B")
SCORE_CHOICES = tuple(str(s) for s in range(1, 11))


def choice_request(prompt_text: str, model: str, prompt_id: str | None,
                   choices: tuple[str, ...] = LETTERS) -> ChoiceRequest:
    return ChoiceRequest(choice_key(prompt_text, choices, model), prompt_text, choices, STAGE, prompt_id)


def _raw(result: ChoiceResult) -> str:
    return result.output if result.output is not None else json.dumps(result.logprobs)


# --- choice ------------------------------------------------------------------------------------------------


def read_orders(principle_id: str, mode: str, ab: ChoiceResult, ba: ChoiceResult, *, clamped: bool = False,
                keys: dict[str, str] | None = None, **extra: str | None) -> Verdict:
    """Input: the readings with a first (``ab``) and a second (``ba``). Output: the verdict.

    P_ab(A) and P_ba(B) both measure "a is better"; their mean cancels position bias. An engine without
    log-probs gives bare decisions, which become a vote; a reading with nothing in it is a parse failure.
    """
    keys = {"ab": ab.key, "ba": ba.key, **(keys or {})}
    common = dict(principle_id=principle_id, mode=mode, keys=keys, ab=ab, ba=ba, **extra)
    if not ab.ok or not ba.ok:
        return Verdict(method="logprobs", status="failed", error=ab.error or ba.error, **common)
    if "structured" in (ab.method, ba.method):
        picks = [_pick(ab), _pick(ba)]
        if None in picks:
            return Verdict(method="structured", status="parse_failed", raw=f"{_raw(ab)} | {_raw(ba)}", **common)
        return Verdict(method="structured", vote_a=ar.vote(picks[0] == "A", picks[1] == "B"), **common)
    p_ab, p_ba = ar.slot_probability(ab, "A"), ar.slot_probability(ba, "B")
    if p_ab is None or p_ba is None:
        return Verdict(method="logprobs", status="parse_failed", raw=f"{_raw(ab)} | {_raw(ba)}", **common)
    if clamped:
        p_ab, p_ba = ar.clamp(p_ab), ar.clamp(p_ba)
    else:
        p_ab, p_ba = ar.snap(p_ab), ar.snap(p_ba)
    return Verdict(method="logprobs", p_a=ar.debias(p_ab, p_ba), p_a_ab=p_ab, p_a_ba=p_ba, **common)


def _pick(result: ChoiceResult) -> str | None:
    if result.method == "structured":
        return ar.structured_pick(result)
    probabilities = result.probabilities()
    return max(probabilities, key=probabilities.__getitem__) if probabilities else None


def choice_requests(engine: Engine, constitution: Constitution, principle: JudgePrinciple, pair: Pair,
                    guard: Guard) -> tuple[ChoiceRequest, ChoiceRequest]:
    """Input: a pair. Output: the two multiple-choice requests, a shown first and a shown second."""
    ab, ba = prompts.choice_prompts(constitution, principle, list(pair.messages), pair.a.text, pair.b.text, guard)
    prompt_id = pair.prompt_id or None
    return choice_request(ab, engine.model, prompt_id), choice_request(ba, engine.model, prompt_id)


async def choice_verdict(engine: Engine, constitution: Constitution, principle: JudgePrinciple, pair: Pair,
                         guard: Guard) -> Verdict:
    ab, ba = choice_requests(engine, constitution, principle, pair, guard)
    results = await asyncio.gather(engine.choose(ab), engine.choose(ba))
    return read_orders(principle.id, "choice", *results)


# --- chain of thought --------------------------------------------------------------------------------------


def rationale_request(text: str, config: JudgeConfig, model: str, prompt_id: str | None) -> ChatRequest:
    """The chat request that asks for the rationale (greedy unless ``cot_temperature`` says otherwise)."""
    messages = ({"role": "user", "content": text},)
    params = SamplingParams(temperature=config.cot_temperature, top_p=1.0, max_tokens=config.cot_max_tokens)
    return ChatRequest(chat_key(messages, params, model), messages, params, STAGE, prompt_id)


async def _cot_order(engine: Engine, constitution: Constitution, text: str, guard: Guard, config: JudgeConfig,
                     prompt_id: str | None) -> tuple[ChoiceResult | None, str | None, str, str | None]:
    """One order: (the reading after the rationale, the rationale, its chat key, an engine error)."""
    chat = rationale_request(text, config, engine.model, prompt_id)
    done = await engine.chat(chat)
    if not done.ok:
        return None, None, chat.key, done.error
    rationale = (done.text or "").strip()
    answer = prompts.cot_answer_prompt(constitution, text, rationale, guard)
    return await engine.choose(choice_request(answer, engine.model, prompt_id)), rationale, chat.key, None


async def cot_verdict(engine: Engine, constitution: Constitution, principle: JudgePrinciple, pair: Pair,
                      guard: Guard, config: JudgeConfig) -> Verdict:
    texts = prompts.cot_prompts(constitution, principle, list(pair.messages), pair.a.text, pair.b.text, guard)
    (ab, why_ab, key_ab, err_ab), (ba, why_ba, key_ba, err_ba) = await asyncio.gather(
        *(_cot_order(engine, constitution, t, guard, config, pair.prompt_id or None) for t in texts))
    keys = {"ab_rationale": key_ab, "ba_rationale": key_ba}
    if ab is None or ba is None:
        return Verdict(principle.id, "cot", "logprobs", status="failed", error=err_ab or err_ba, keys=keys)
    return read_orders(principle.id, "cot", ab, ba, clamped=True, keys=keys, rationale_ab=why_ab,
                       rationale_ba=why_ba)


# --- direct score (d-RLAIF) --------------------------------------------------------------------------------


def score_request(constitution: Constitution, principle: JudgePrinciple, conversation: list[Message],
                  response: str, guard: Guard, model: str, prompt_id: str | None) -> ChoiceRequest:
    """Input: one response. Output: the rating request, whose choices are the score tokens "1" .. "10"."""
    text = prompts.score_prompt(constitution, principle, conversation, response, guard)
    return choice_request(text, model, prompt_id, SCORE_CHOICES)


def read_score(result: ChoiceResult) -> tuple[float | None, str]:
    """Input: a rating result. Output: (score, method): E[s] from log-probs, the bare pick when structured."""
    if result.method == "structured":
        pick = ar.structured_pick(result)
        return (float(pick) if pick is not None else None), "structured"
    return (ar.score_expectation(result.logprobs) if result.ok else None), "logprobs"


async def score_response(engine: Engine, constitution: Constitution, principle: JudgePrinciple,
                         conversation: list[Message], response: str, *, guard: Guard | None = None,
                         prompt_id: str | None = None) -> tuple[float | None, ChoiceResult]:
    """The d-RLAIF score of one response in [1, 10] (None when unreadable), with the result it came from.

    What the RL stage calls for a reward (Lee et al. 2023, section 2.2.2 normalise it to [-1, 1] there).
    """
    guard = guard or guard_for(engine, constitution)
    result = await engine.choose(score_request(constitution, principle, conversation, response, guard,
                                               engine.model, prompt_id))
    return read_score(result)[0], result


async def score_verdict(engine: Engine, constitution: Constitution, principle: JudgePrinciple, pair: Pair,
                        guard: Guard, config: JudgeConfig) -> Verdict:
    conversation = list(pair.messages)
    (s_a, ra), (s_b, rb) = await asyncio.gather(*(
        score_response(engine, constitution, principle, conversation, text, guard=guard,
                       prompt_id=pair.prompt_id or None) for text in (pair.a.text, pair.b.text)))
    keys = {"a": ra.key, "b": rb.key}
    if not ra.ok or not rb.ok:
        return Verdict(principle.id, "score", "logprobs", status="failed", error=ra.error or rb.error, keys=keys)
    method = "structured" if "structured" in (ra.method, rb.method) else "logprobs"
    if s_a is None or s_b is None:
        return Verdict(principle.id, "score", method, status="parse_failed", raw=f"{_raw(ra)} | {_raw(rb)}",
                       keys=keys)
    if method == "structured":
        return Verdict(principle.id, "score", method, vote_a=0.5 + 0.5 * ((s_a > s_b) - (s_a < s_b)),
                       score_a=s_a, score_b=s_b, keys=keys)
    return Verdict(principle.id, "score", method, p_a=ar.logistic(s_a - s_b, config.score_temperature),
                   score_a=s_a, score_b=s_b, keys=keys)


# --- likelihood contrast -----------------------------------------------------------------------------------


def contrast_requests(constitution: Constitution, principle: JudgePrinciple, conversation: list[Message],
                      response: str, guard: Guard, model: str, prompt_id: str | None
                      ) -> tuple[ScoreRequest, ScoreRequest]:
    """Input: one response. Output: score requests for it under the principle's framing and under the baseline."""
    framing, baseline = prompts.framings(constitution, principle)
    continuation = guard.tokens(response)
    out = []
    for f in (framing, baseline):
        messages = prompts.framed_messages(f, conversation, guard)
        out.append(ScoreRequest(score_key(messages, continuation, model), messages, continuation, STAGE, prompt_id))
    return out[0], out[1]


def read_contrast(framed: ScoreResult, baseline: ScoreResult) -> float | None:
    """PMI per token: mean log P(r | framed) - mean log P(r | baseline); None when either is unreadable."""
    if framed.mean is None or baseline.mean is None:
        return None
    return framed.mean - baseline.mean


async def contrast_verdict(engine: Engine, constitution: Constitution, principle: JudgePrinciple, pair: Pair,
                           guard: Guard, config: JudgeConfig) -> Verdict:
    conversation = list(pair.messages)
    requests = [r for text in (pair.a.text, pair.b.text) for r in contrast_requests(
        constitution, principle, conversation, text, guard, engine.model, pair.prompt_id or None)]
    fa, ba_, fb, bb = await asyncio.gather(*(engine.score(r) for r in requests))
    keys = {"a_framed": fa.key, "a_baseline": ba_.key, "b_framed": fb.key, "b_baseline": bb.key}
    failed = next((r for r in (fa, ba_, fb, bb) if not r.ok), None)
    if failed is not None:
        return Verdict(principle.id, "contrast", "likelihood", status="failed", error=failed.error, keys=keys)
    s_a, s_b = read_contrast(fa, ba_), read_contrast(fb, bb)
    if s_a is None or s_b is None:
        return Verdict(principle.id, "contrast", "likelihood", status="parse_failed", keys=keys,
                       raw="empty continuation: no tokens to score")
    return Verdict(principle.id, "contrast", "likelihood", p_a=ar.logistic(s_a - s_b, config.contrast_temperature),
                   score_a=s_a, score_b=s_b, keys=keys)
