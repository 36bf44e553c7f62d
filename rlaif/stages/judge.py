"""Stage 3: the AI judge compares two responses, in both orders.

Bai et al. 2022 (arXiv 2212.08073, section 4.1) turn each comparison into a multiple-choice question ("Consider
the following conversation ... Options: (A) ... (B) ... The answer is:") and read the preference from the
feedback model's log-probabilities of the option letters, normalised over the options: a soft label, not a
sampled verdict. Few-shot comparison examples are placed in front of the question.
Lee et al. 2023 ("RLAIF", arXiv 2309.00267, section 2.1.1) found the judge prefers whichever answer it sees
first, and cancel that position bias by judging both orders and averaging.

Here: P(A) and P(B) come from ``engine.choose`` on the raw prompt (no chat template), so the letter is read
exactly where the template's trailing "(" leaves it. The two orders are averaged so that
p(a > b) = (P_A(a, b) + P_B(b, a)) / 2, which makes the swap exact: judging (b, a) gives 1 - p(a > b).
Whether both orders agree is stored per pair.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from rlaif.constitution import Constitution, JudgePrinciple, render
from rlaif.engines.base import ChoiceRequest, ChoiceResult, Engine, Message, choice_key, content_hash

STAGE = "judge"
CHOICES = ("A", "B")


@dataclass
class Verdict:
    """Both orders of one comparison. ``p_a`` is the debiased probability that ``a`` is better."""

    principle_id: str
    ab: ChoiceResult  # a shown as (A)
    ba: ChoiceResult  # a shown as (B)
    p_a_ab: float | None
    p_a_ba: float | None
    p_a: float | None
    consistent: bool | None


def pair_id(prompt_id: str, response_a: str, response_b: str) -> str:
    return content_hash("pair", prompt_id, response_a, response_b)


def draw_judge_principle(constitution: Constitution, run_seed: int, pair: str) -> JudgePrinciple:
    """One judge principle per pair, drawn by weight, seeded by the run seed and the pair alone."""
    rng = random.Random(content_hash("judge-principle", run_seed, pair))
    principles = constitution.judge_principles
    return rng.choices(principles, weights=[p.weight for p in principles], k=1)[0]


def render_conversation(constitution: Constitution, messages: list[Message]) -> str:
    """The conversation as text for the judge prompt; system turns are not shown to the judge."""
    templates = constitution.templates
    lines = []
    for m in messages:
        if m["role"] == "user":
            lines.append(render(templates.human_turn, content=m["content"]))
        elif m["role"] == "assistant":
            lines.append(render(templates.assistant_turn, content=m["content"]))
    return "\n\n".join(lines)


def judge_prompt(constitution: Constitution, principle: JudgePrinciple, conversation: list[Message],
                 first: str, second: str) -> str:
    """Input: a conversation and two candidate answers. Output: the raw multiple-choice prompt, exemplars first."""
    t = constitution.templates
    parts = []
    for ex in constitution.fewshot.judge:
        ex_principle = constitution.judge_principle(ex.principle)
        ex_conversation = render_conversation(constitution, [{"role": "user", "content": ex.prompt}])
        question = render(t.judge, conversation=ex_conversation, question=ex_principle.question,
                          response_a=ex.response_a, response_b=ex.response_b)
        parts.append(question + render(t.judge_answer, answer=ex.answer))
    parts.append(render(t.judge, conversation=render_conversation(constitution, conversation),
                        question=principle.question, response_a=first, response_b=second))
    return t.judge_separator.join(parts)


def choice_request(prompt_text: str, model: str, prompt_id: str | None) -> ChoiceRequest:
    return ChoiceRequest(choice_key(prompt_text, CHOICES, model), prompt_text, CHOICES, STAGE, prompt_id)


def combine(principle_id: str, ab: ChoiceResult, ba: ChoiceResult) -> Verdict:
    """Average the two orders: P_A with a first, and P_B with a second, both measure 'a is better'."""
    p_ab = ab.probabilities()["A"] if ab.ok else None
    p_ba = ba.probabilities()["B"] if ba.ok else None
    if p_ab is None or p_ba is None:
        return Verdict(principle_id, ab, ba, p_ab, p_ba, None, None)
    consistent = (p_ab > 0.5) == (p_ba > 0.5) and p_ab != 0.5 and p_ba != 0.5
    return Verdict(principle_id, ab, ba, p_ab, p_ba, (p_ab + p_ba) / 2, consistent)


async def judge_pair(engine: Engine, constitution: Constitution, principle: JudgePrinciple,
                     conversation: list[Message], a: str, b: str, prompt_id: str | None = None) -> Verdict:
    """Judge ``a`` against ``b`` under one principle, in both orders."""
    ab_req = choice_request(judge_prompt(constitution, principle, conversation, a, b), engine.model, prompt_id)
    ba_req = choice_request(judge_prompt(constitution, principle, conversation, b, a), engine.model, prompt_id)
    ab, ba = await asyncio.gather(engine.choose(ab_req), engine.choose(ba_req))
    return combine(principle.id, ab, ba)
