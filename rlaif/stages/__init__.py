"""Pipeline stages: small functions from rows to rows, with the engine passed in.

Each module builds its prompts in one set of functions and calls the engine in another, so the exact message
sequences can be tested without a model. Prompt text comes from the constitution's templates, never from here.
"""

from __future__ import annotations

from rlaif.engines.base import content_hash


def derive_seed(run_seed: int, *parts: object) -> int:
    """A per-request seed from the run seed and the request's place (prompt, stage, round).

    Seeds depend only on what a request is, never on the order requests run in, so a resumed or re-ordered run
    asks for the same seeds. Whether a seed then gives the same sample depends on the engine and its dtype: yes
    for vLLM in float32, not across batches for vLLM in bfloat16 or for transformers (docs/engines.md, "Seeds").
    """
    return int(content_hash("seed", run_seed, *parts)[:8], 16)
