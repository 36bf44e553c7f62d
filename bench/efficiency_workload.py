"""The workload of ``engine_efficiency.py``: prompts and the respond -> critique -> revise chain of each.

Every request is built by the project's own stage functions (``rlaif.stages``: ``response_request``,
``critique_request``, ``revision_request``), with the shipped ``harmless`` constitution, so the seeds and
principle draws are the pipeline's own and the offline run (a), the bare client (b) and the project's flow (c)
send byte-identical messages and sampling options for the same prompt and outputs.
``check_equivalence`` proves it after the fact against the rows (c) wrote to DuckDB.

Runs in the main environment only (it imports the constitution loader, which needs ruamel.yaml); the offline
worker in the vLLM environment receives finished message lists as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif.constitution import Constitution, Principle, load_constitution, resolve_constitution
from rlaif.engines.base import ChatRequest, Message, SamplingParams, chat_key
from rlaif.options import RunOptions
from rlaif.prompts import PromptRow, demo_prompts_path, load_prompts
from rlaif.stages import RunContext, clean_output
from rlaif.stages.critique_revise import critique_request, revision_request
from rlaif.stages.respond import response_request

CONSTITUTION = "harmless"
STAGES = ("respond", "critique", "revise")
ROUND = 1  # one critique/revision round, as the flow runs with rounds=1
_NO_MODEL = ""  # requests are built without a model: each path puts its own model into the key or body


@dataclass(frozen=True)
class Call:
    """One chat request of a chain: what every path sends for it."""

    stage: str
    prompt_id: str
    messages: list[Message]
    params: SamplingParams
    request: ChatRequest | None = None  # the stage's own request, for the next round's conversation
    principle: Principle | None = None

    def openai_kwargs(self, model: str) -> dict[str, Any]:
        """The body the project's OpenAI engine sends for this request (``OpenAIEngine._chat_kwargs``)."""
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": [dict(m) for m in self.messages],
            "temperature": self.params.temperature,
            "top_p": self.params.top_p,
            "max_tokens": self.params.max_tokens,
        }
        if self.params.seed is not None:
            kwargs["seed"] = self.params.seed
        if self.params.ignore_eos:
            kwargs["extra_body"] = {"ignore_eos": True}
        return kwargs

    def vllm_params(self) -> dict[str, Any]:
        """Keyword arguments of ``vllm.SamplingParams``, as the in-process vLLM engine builds them."""
        p = self.params
        return {"temperature": p.temperature, "top_p": p.top_p, "max_tokens": p.max_tokens, "seed": p.seed,
                "ignore_eos": p.ignore_eos}


def _call(request: ChatRequest, principle: Principle | None = None) -> Call:
    return Call(request.stage, request.prompt_id or "", list(request.messages), request.params, request, principle)


class Chains:
    """Each chain's requests, built by the stages themselves (``rlaif.stages``) from the previous outputs."""

    def __init__(self, constitution: Constitution, *, run_seed: int, base: SamplingParams):
        self.ctx = RunContext(run_id="bench", seed=run_seed, constitution=constitution, params=base,
                              config_hash="bench", rounds=ROUND, context="transcript")

    def respond(self, prompt: PromptRow) -> Call:
        return _call(response_request(self.ctx, prompt, _NO_MODEL))

    def critique(self, prompt: PromptRow, response: str | None) -> Call | None:
        """None when the response is empty: the pipeline stops that chain there."""
        answer = clean_output(response)
        if answer is None:
            return None
        request, principle = critique_request(self.ctx, prompt, ROUND, answer, None, _NO_MODEL)
        return _call(request, principle)

    def revise(self, prompt: PromptRow, critique_call: Call, critique: str | None) -> Call | None:
        text = clean_output(critique)
        if text is None:
            return None
        assert critique_call.request is not None and critique_call.principle is not None
        return _call(revision_request(self.ctx, prompt, ROUND, critique_call.request, text, critique_call.principle,
                                      _NO_MODEL))


def load_chains(*, run_seed: int, max_tokens: int, ignore_eos: bool) -> Chains:
    """Chains over the shipped constitution with the flow's sampling options (``RunOptions`` defaults)."""
    base = RunOptions(prompts="-", rounds=ROUND, max_tokens=max_tokens, ignore_eos=ignore_eos).sampling()
    return Chains(load_constitution(resolve_constitution(CONSTITUTION)), run_seed=run_seed, base=base)


def write_prompts(n: int, path: Path) -> list[PromptRow]:
    """The demo prompts, repeated with a numbered suffix until there are ``n`` distinct ones, as JSONL.

    Returns the rows as the flow will read them back (same ids, same order).
    """
    texts = [row.text for row in load_prompts(demo_prompts_path())]
    lines = []
    for i in range(n):
        text = texts[i % len(texts)]
        if i >= len(texts):
            text = f"{text} ({i // len(texts) + 1})"
        lines.append(json.dumps({"prompt": text}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = load_prompts(path)
    if len(rows) != n:
        raise RuntimeError(f"expected {n} distinct prompts in {path}, got {len(rows)}")
    return rows


def check_equivalence(chains: Chains, prompts: list[PromptRow], rows: list[dict], model: str) -> int:
    """Rebuild every chat request (c) made from (c)'s own stored outputs and compare with what it stored.

    ``rows``: the ``generations`` rows (key, stage, prompt_id, messages, output) of the project's run. The
    messages must match byte for byte (as JSON) and the request key, a hash of messages, sampling options and
    model, must match too, which covers seeds and ``ignore_eos``; and the body the bare client (b) sends must be
    the one the project's OpenAI engine builds. Returns the number of requests checked.
    """
    from rlaif.engines.base import ChatRequest
    from rlaif.engines.openai_engine import OpenAIEngine

    engine = OpenAIEngine(["http://127.0.0.1:9/v1"], model)  # never connects: only builds request bodies
    by_place = {(r["prompt_id"], r["stage"]): r for r in rows}
    checked = 0
    for prompt in prompts:
        call: Call | None = chains.respond(prompt)
        critique_call: Call | None = None
        for stage in STAGES:
            row = by_place.get((prompt.prompt_id, stage))
            if call is None or row is None:
                if (call is None) != (row is None):
                    raise AssertionError(f"{prompt.prompt_id} {stage}: benchmark call {call is not None}, "
                                         f"project row {row is not None}")
                break
            stored = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
            if json.dumps(stored) != json.dumps(call.messages):
                raise AssertionError(f"{prompt.prompt_id} {stage}: messages differ from the project's")
            if chat_key(call.messages, call.params, model) != row["key"]:
                raise AssertionError(f"{prompt.prompt_id} {stage}: request key differs (sampling options?)")
            request = ChatRequest(row["key"], tuple(call.messages), call.params)
            if engine._chat_kwargs(request) != call.openai_kwargs(model):
                raise AssertionError(f"{prompt.prompt_id} {stage}: the bare client's body differs from the engine's")
            checked += 1
            if stage == "respond":
                call = critique_call = chains.critique(prompt, row["output"])
            elif stage == "critique":
                assert critique_call is not None
                call = chains.revise(prompt, critique_call, row["output"])
    return checked
