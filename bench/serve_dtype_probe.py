"""Does a seeded sample depend on what shares its batch? One vLLM server asked, for ``serve_dtype.py``.

The targets are 8 chat prompts, each sampled with its own seed at temperature 1 (48 tokens), and the same 8
prompts greedy (temperature 0). Counted, each as "equal of compared":

- ``alone_twice``: each target sent alone, one after the other, in two passes: is the second text the first?
- ``batched``: every target at once among 24 filler requests of other prompts, seeds and lengths, in two
  compositions (targets at other places, other fillers): is each target's text its first alone text?
- ``twins``: in the batched runs every seeded target goes twice (two requests, one seed): are the copies equal?
- ``choice_logprob_delta``: the judge prompt's log-probs of A and B alone, and again beside 24 filler chats: the
  largest absolute difference (what a judge's preference can move by with its batch).

The tests (``tests/test_vllm_server.py``) assert per dtype only what held here without exception.
"""

from __future__ import annotations

import asyncio
from typing import Any

SUBJECTS = ("a lighthouse", "a fox", "the moon", "a library", "rain", "a violin", "a desert", "a market")
FILLER = ("Count from one to ten.", "Name three fruits.", "What is a verb?", "Describe a chair in detail.",
          "Give me a recipe for soup.", "Why is the sky blue?")
JUDGE = ("Which response is more harmless?\n(A) I cannot help with that.\n(B) Sure, here is how to pick a lock.\n"
         "The answer is: (")


def _chat(key: str, text: str, *, temperature: float, max_tokens: int, seed: int | None) -> Any:
    from rlaif.engines.base import ChatRequest, SamplingParams

    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed)
    return ChatRequest(key, ({"role": "user", "content": text},), params)


def targets() -> list:
    seeded = [_chat(f"s{i}", f"Write two sentences about {s}.", temperature=1.0, max_tokens=48, seed=100 + i)
              for i, s in enumerate(SUBJECTS)]
    greedy = [_chat(f"g{i}", f"Write two sentences about {s}.", temperature=0.0, max_tokens=48, seed=None)
              for i, s in enumerate(SUBJECTS)]
    return seeded + greedy


def fillers(composition: int, n: int = 24) -> list:
    return [_chat(f"f{composition}-{i}", f"{FILLER[(i + composition) % len(FILLER)]} ({composition}.{i})",
                  temperature=0.8, max_tokens=16 + (7 * i + 5 * composition) % 80, seed=1000 * composition + i)
            for i in range(n)]


def _texts(engine: Any, requests: list) -> list[str | None]:
    from rlaif.engines.base import run_all

    return [c.text for c in run_all([engine.chat(r) for r in requests])]


def probe(url: str, model: str) -> dict:
    """Counts of equal texts (see the module docstring) and the choice log-prob delta, for the server at ``url``."""
    from rlaif.engines.openai_engine import OpenAIEngine

    engine = OpenAIEngine([url], model, concurrency=64, timeout_s=3600.0, max_retries=0)
    wanted = targets()
    seeded = [r for r in wanted if r.params.seed is not None]
    first = {r.key: _texts(engine, [r])[0] for r in wanted}
    second = {r.key: _texts(engine, [r])[0] for r in wanted}
    counts = {name: [0, 0] for name in ("alone_seeded", "alone_greedy", "batched_seeded", "batched_greedy", "twins")}

    def count(name: str, equal: bool) -> None:
        counts[name][0] += int(equal)
        counts[name][1] += 1

    for r in wanted:
        count("alone_seeded" if r.params.seed is not None else "alone_greedy", first[r.key] == second[r.key])
    for composition in (1, 2):
        twins = [_chat(r.key + "-twin", r.messages[0]["content"], temperature=1.0, max_tokens=48, seed=r.params.seed)
                 for r in seeded]
        mix = fillers(composition)
        for i, request in enumerate(wanted + twins):  # spread the targets among the fillers, differently each time
            mix.insert((i * (3 + composition)) % (len(mix) + 1), request)
        texts = dict(zip((r.key for r in mix), _texts(engine, mix)))
        for r in wanted:
            count("batched_seeded" if r.params.seed is not None else "batched_greedy", texts[r.key] == first[r.key])
        for r, t in zip(seeded, twins):
            count("twins", texts[r.key] == texts[t.key])
    counts["choice_logprob_delta"] = _choice_delta(engine)  # type: ignore[assignment]
    asyncio.run(engine.aclose())
    return counts


def _choice_delta(engine: Any) -> float:
    from rlaif.engines.base import ChoiceRequest, run_all

    judge = ChoiceRequest("judge", JUDGE, ("A", "B"))
    alone = run_all([engine.choose(judge)])[0].logprobs
    beside = run_all([engine.choose(judge), *(engine.chat(r) for r in fillers(3))])[0].logprobs
    return max(abs(alone[c] - beside[c]) for c in ("A", "B"))
