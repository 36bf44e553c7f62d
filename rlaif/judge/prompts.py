"""Judge prompts for every mode, built from the constitution's templates; no prompt text lives here.

Each builder takes the conversation and candidate text(s) and returns the exact prompt (raw text) or messages
the engine gets. Untrusted text goes through a ``Guard`` (``defences.py``) on the way in.

Prefix sharing: the shipped ``templates.judge`` puts the exemplars, then the conversation, then both options,
and the principle's question last. So every principle and both orders of a pair share the prompt up to the
first option, and the two orders of one principle differ only from there; vLLM's prefix cache and the
transformers engine's shared-prefix pass both reuse that prefix.
"""

from __future__ import annotations

import string

from rlaif.constitution import Constitution, JudgeExample, JudgePrinciple, render
from rlaif.engines.base import Message
from rlaif.errors import ConfigError
from rlaif.judge.defences import Guard
from rlaif.judge.spec import PRINCIPLE_FIELDS, Framing


def render_conversation(constitution: Constitution, messages: list[Message] | tuple[Message, ...],
                        guard: Guard) -> str:
    """Input: a conversation. Output: its text for a judge prompt (system turns are not shown to the judge)."""
    t = constitution.templates
    lines = []
    for m in messages:
        template = {"user": t.human_turn, "assistant": t.assistant_turn}.get(m["role"])
        if template is not None:
            lines.append(render(template, content=guard.text(m["content"])))
    return "\n\n".join(lines)


def _question(principle: JudgePrinciple, shown: str, first: str, second: str, template: str) -> str:
    """One question of ``template`` (``templates.judge`` or ``judge.cot``) on a rendered conversation and two
    fenced candidates."""
    return render(template, conversation=shown, question=principle.question, response_a=first, response_b=second)


def _exemplar_question(constitution: Constitution, ex: JudgeExample, template: str, guard: Guard) -> str:
    shown = render_conversation(constitution, [{"role": "user", "content": ex.prompt}], guard)
    return _question(constitution.judge_principle(ex.principle), shown, guard.candidate(ex.response_a),
                     guard.candidate(ex.response_b), template)


def _both_orders(constitution: Constitution, principle: JudgePrinciple, conversation: list[Message], a: str,
                 b: str, template: str, guard: Guard, exemplars: tuple[str, ...]) -> tuple[str, str]:
    """The exemplars, then the question with ``a`` first and with ``b`` first: the conversation and each
    candidate are defused once for both orders."""
    shown = render_conversation(constitution, conversation, guard)
    fenced_a, fenced_b = guard.candidate(a), guard.candidate(b)
    sep = constitution.templates.judge_separator
    return (sep.join((*exemplars, _question(principle, shown, fenced_a, fenced_b, template))),
            sep.join((*exemplars, _question(principle, shown, fenced_b, fenced_a, template))))


def _choice_exemplars(constitution: Constitution, guard: Guard) -> tuple[str, ...]:
    t = constitution.templates
    return tuple(_exemplar_question(constitution, ex, t.judge, guard) + render(t.judge_answer, answer=ex.answer)
                 for ex in constitution.fewshot.judge)


def choice_prompts(constitution: Constitution, principle: JudgePrinciple, conversation: list[Message], a: str,
                   b: str, guard: Guard) -> tuple[str, str]:
    """Input: a conversation and two candidates. Output: the raw multiple-choice prompts, ``a`` shown first and
    ``b`` shown first.

    The paper's form (Bai et al. 2022, section 4.1): worked exemplars, each closed by its answer, then the
    question, ending on the "(" before the answer letter. The exemplars are the same text in every prompt of a
    run, so they are rendered once per constitution and guard (``Constitution.derived``).
    """
    exemplars = constitution.derived(_choice_exemplars, guard)
    return _both_orders(constitution, principle, conversation, a, b, constitution.templates.judge, guard, exemplars)


def choice_prompt(constitution: Constitution, principle: JudgePrinciple, conversation: list[Message],
                  first: str, second: str, guard: Guard) -> str:
    """Input: a conversation and two candidates in slot order. Output: the raw multiple-choice prompt."""
    return choice_prompts(constitution, principle, conversation, first, second, guard)[0]


def _required(value: str | None, field: str, constitution: Constitution, mode: str) -> str:
    if value is None:
        raise ConfigError(f"constitution {constitution.name!r} has no {field}, which --mode {mode} needs "
                          "(see constitutions/harmless.yaml)")
    return value


def _cot_exemplars(constitution: Constitution, guard: Guard, cot: str, answer: str) -> tuple[str, ...]:
    judge_answer = constitution.templates.judge_answer
    return tuple(f"{_exemplar_question(constitution, ex, cot, guard)} {ex.rationale.strip()}{answer}"
                 f"{render(judge_answer, answer=ex.answer)}" for ex in constitution.fewshot.judge if ex.rationale)


def cot_prompts(constitution: Constitution, principle: JudgePrinciple, conversation: list[Message], a: str, b: str,
                guard: Guard) -> tuple[str, str]:
    """Input: a conversation and two candidates. Output: the chain-of-thought request texts, ``a`` shown first
    and ``b`` shown first.

    Exemplars that carry a ``rationale`` are shown worked through: question, rationale, answer (rendered once per
    constitution and guard, as in ``choice_prompts``).
    """
    cot = _required(constitution.judge.cot, "judge.cot", constitution, "cot")
    answer = _required(constitution.judge.cot_answer, "judge.cot_answer", constitution, "cot")
    exemplars = constitution.derived(_cot_exemplars, guard, cot, answer)
    return _both_orders(constitution, principle, conversation, a, b, cot, guard, exemplars)


def cot_answer_prompt(constitution: Constitution, cot_text: str, rationale: str, guard: Guard) -> str:
    """Input: the chain-of-thought request and the model's rationale. Output: the raw prompt read for A/B."""
    answer = _required(constitution.judge.cot_answer, "judge.cot_answer", constitution, "cot")
    return f"{cot_text} {guard.text(rationale.strip())}{answer}"


def rating_question(constitution: Constitution, principle: JudgePrinciple) -> str:
    return _required(principle.rating_question, f"judge_principles[{principle.id}].rating_question",
                     constitution, "score")


def score_prompt(constitution: Constitution, principle: JudgePrinciple, conversation: list[Message],
                 response: str, guard: Guard) -> str:
    """Input: a conversation and one candidate. Output: the raw 1-10 rating prompt, ending on "(" (d-RLAIF)."""
    template = _required(constitution.judge.score, "judge.score", constitution, "score")
    shown = render_conversation(constitution, conversation, guard)
    return render(template, conversation=shown, question=rating_question(constitution, principle),
                  response=guard.candidate(response))


def framings(constitution: Constitution, principle: JudgePrinciple) -> tuple[Framing, Framing]:
    """The principle's (framing, baseline) for the likelihood-contrast mode, with its ``{statement}`` and
    ``{contrary}`` filled in (only ``{prompt}`` is left, for ``framed_messages``).

    Each side is the principle's own ``framing``/``baseline`` when it sets one, else ``judge.contrast``'s
    template, so one template gives every principle its own framing. Resolved once per constitution version.
    """
    if any(p is principle for p in constitution.judge_principles):
        return constitution.derived(_framings_by_id, principle.id)
    return _resolved_framings(constitution, principle)  # a principle built outside the file: no cache


def _framings_by_id(constitution: Constitution, principle_id: str) -> tuple[Framing, Framing]:
    return _resolved_framings(constitution, constitution.judge_principle(principle_id))


def _resolved_framings(constitution: Constitution, principle: JudgePrinciple) -> tuple[Framing, Framing]:
    contrast = constitution.judge.contrast
    framing = principle.framing or (contrast.framing if contrast else None)
    baseline = principle.baseline or (contrast.baseline if contrast else None)
    if framing is None or baseline is None:
        _required(None, "judge.contrast (or a framing and baseline on every judge principle)", constitution,
                  "contrast")
    return _filled(constitution, principle, framing), _filled(constitution, principle, baseline)  # type: ignore


def _filled(constitution: Constitution, principle: JudgePrinciple, framing: Framing) -> Framing:
    """``framing`` with the principle's statement and contrary rendered into it; ``{prompt}`` stays a
    placeholder (the principle's braces are doubled, so they come out literal when the prompt is filled)."""
    used = set(_fields_of(framing.system or "")) | set(_fields_of(framing.user))
    values = {}
    for name in PRINCIPLE_FIELDS:
        value = getattr(principle, name)
        if name in used and value is None:
            raise ConfigError(f"constitution {constitution.name!r}: judge principle {principle.id!r} has no "
                              f"{name}, which the likelihood-contrast framing's {{{name}}} needs (--mode contrast)")
        values[name] = value or ""
    system = render(framing.system, **values) if framing.system else None
    escaped = {k: v.replace("{", "{{").replace("}", "}}") for k, v in values.items()}
    return framing.model_copy(update={"system": system, "user": render(framing.user, prompt="{prompt}", **escaped)})


def _fields_of(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def framed_messages(framing: Framing, conversation: list[Message], guard: Guard) -> tuple[Message, ...]:
    """Input: a framing and a conversation ending with a user turn. Output: the framed chat messages.

    The framing's system turn replaces any system turn of the conversation; its ``user`` template replaces the
    last user turn (``{prompt}`` is that turn's text). Earlier turns are kept as they are.
    """
    turns = [m for m in conversation if m["role"] != "system"]
    last = max((i for i, m in enumerate(turns) if m["role"] == "user"), default=None)
    out: list[Message] = [{"role": "system", "content": framing.system}] if framing.system else []
    for i, m in enumerate(turns):
        content = guard.tokens(m["content"])
        if i == last:
            content = render(framing.user, prompt=content)
        out.append({"role": m["role"], "content": content})
    return tuple(out)
