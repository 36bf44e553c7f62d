"""Stage 2: critique-and-revise rounds, the supervised phase of Constitutional AI.

Bai et al. 2022 (arXiv 2212.08073, section 3.1): the model is shown a conversation, asked to critique its last
response against one principle, then asked to rewrite the response in light of the critique; the revision can be
critiqued again with a freshly sampled principle, and few-shot examples of the procedure come first.

Kept from the paper: one principle drawn at random per round (with replacement, weighted here by the YAML
``weight``), the critique request -> critique -> revision request -> revision order, and few-shot exemplars
placed before the conversation.
Changed: the paper wrote the exchange as one raw transcript ("Critique Request: ... Critique: ..."); chat models
get it as alternating user/assistant turns. Each round starts from a fresh context holding the latest revision as
the assistant's answer, instead of the whole history of earlier rounds, so prompts stay within small context
windows. Principle draws are seeded per prompt and round from the run seed, so they do not depend on the order
prompts run in or on where a resumed run restarts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from rlaif.constitution import Constitution, Principle, render
from rlaif.engines.base import ChatRequest, Completion, Engine, Message, SamplingParams, chat_key, content_hash
from rlaif.prompts import PromptRow
from rlaif.stages import derive_seed


@dataclass
class Round:
    """One critique/revision round. ``before`` is the text that was critiqued."""

    number: int
    principle_id: str
    before: str
    critique: Completion
    revision: Completion | None  # None when the critique failed

    @property
    def revised_text(self) -> str | None:
        return clean_output(self.revision.text) if self.revision and self.revision.ok else None


def draw_principle(constitution: Constitution, run_seed: int, prompt_id: str, round_number: int) -> Principle:
    """Draw one principle with replacement, by weight, seeded by (run seed, prompt, round) alone."""
    rng = random.Random(content_hash("principle", run_seed, prompt_id, round_number))
    weights = [p.weight for p in constitution.principles]
    return rng.choices(constitution.principles, weights=weights, k=1)[0]


def fewshot_turns(constitution: Constitution) -> list[Message]:
    """The constitution's worked examples as prior turns: prompt, answer, critique request, critique, ..."""
    turns: list[Message] = []
    for ex in constitution.fewshot.critique_revision:
        principle = constitution.principle(ex.principle)
        turns += [
            {"role": "user", "content": ex.prompt},
            {"role": "assistant", "content": ex.response},
            {"role": "user", "content": render(constitution.templates.critique,
                                               critique_request=principle.critique_request)},
            {"role": "assistant", "content": ex.critique},
            {"role": "user", "content": render(constitution.templates.revision,
                                               revision_request=principle.revision_request, critique=ex.critique)},
            {"role": "assistant", "content": ex.revision},
        ]
    return turns


def critique_messages(constitution: Constitution, prompt: PromptRow, answer: str, principle: Principle) -> list[Message]:
    """Input: prompt, the answer to critique, a principle. Output: messages ending in the critique request."""
    return [
        *fewshot_turns(constitution),
        *[dict(m) for m in prompt.messages],
        {"role": "assistant", "content": answer},
        {"role": "user", "content": render(constitution.templates.critique,
                                           critique_request=principle.critique_request)},
    ]


def revision_messages(constitution: Constitution, critique_msgs: list[Message], critique: str,
                      principle: Principle) -> list[Message]:
    """Input: the critique conversation and its critique. Output: messages ending in the revision request."""
    return [
        *critique_msgs,
        {"role": "assistant", "content": critique},
        {"role": "user", "content": render(constitution.templates.revision,
                                           revision_request=principle.revision_request, critique=critique)},
    ]


def clean_output(text: str | None) -> str | None:
    """Strip whitespace; an empty output is no output (kept as NULL, counted with SQL)."""
    if text is None:
        return None
    text = text.strip()
    return text or None


def _request(messages: list[Message], params: SamplingParams, model: str, stage: str, prompt_id: str) -> ChatRequest:
    return ChatRequest(chat_key(messages, params, model), tuple(messages), params, stage, prompt_id)


async def critique_revise(
    prompt: PromptRow,
    answer: str,
    engine: Engine,
    constitution: Constitution,
    params: SamplingParams,
    *,
    rounds: int,
    run_seed: int,
) -> list[Round]:
    """Run ``rounds`` critique/revision rounds on ``answer``; stops early at the first failed call."""
    done: list[Round] = []
    current = answer
    for number in range(1, rounds + 1):
        principle = draw_principle(constitution, run_seed, prompt.prompt_id, number)
        c_params = replace(params, seed=derive_seed(run_seed, prompt.prompt_id, "critique", number))
        r_params = replace(params, seed=derive_seed(run_seed, prompt.prompt_id, "revise", number))
        c_msgs = critique_messages(constitution, prompt, current, principle)
        critique = await engine.chat(_request(c_msgs, c_params, engine.model, "critique", prompt.prompt_id))
        critique_text = clean_output(critique.text)
        if critique_text is None:
            done.append(Round(number, principle.id, current, critique, None))
            break
        r_msgs = revision_messages(constitution, c_msgs, critique_text, principle)
        revision = await engine.chat(_request(r_msgs, r_params, engine.model, "revise", prompt.prompt_id))
        done.append(Round(number, principle.id, current, critique, revision))
        if done[-1].revised_text is None:
            break
        current = done[-1].revised_text
    return done
