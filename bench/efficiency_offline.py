"""Path (a) of ``engine_efficiency.py``: raw offline ``vllm.LLM`` in the vLLM environment, driven over a pipe.

The parent builds every request with the project's stage functions (they need the main environment) and sends
one stage at a time, all prompts at once; this worker runs each stage as a single ``LLM.chat`` call with one
``SamplingParams`` per request, the most favourable way to feed vLLM. A chain forces a barrier between stages.

Protocol: one JSON object per line on stdin (``{"op": "chat", "conversations": [...], "params": [...]}``,
``{"op": "reset"}``, ``{"op": "stop"}``); one JSON reply per line on the file descriptor named by ``argv[1]``
(vLLM logs to stdout and stderr, which the parent sends to a log file). The engine options are the server's
(``rlaif.engines.vllm_options.engine_options``, CPU flags and the ``serve_dtype`` setting the parent passes),
plus ``max_num_seqs`` (and, for experiments, ``block_size``) as the parent sets them. ``vllm_options`` is
stdlib-only, so ``PYTHONPATH=<repo>`` is all this environment needs from the project.

Usage: ``python bench/efficiency_offline.py REPLY_FD MODEL_DIR MAX_NUM_SEQS DTYPE [BLOCK_SIZE]``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO, Any


def load(model_dir: str, max_num_seqs: int, dtype: str, block_size: int | None) -> tuple[Any, dict]:
    from rlaif.engines.vllm_options import CPU_KVCACHE_GIB, engine_options
    from rlaif.environment import prepare_environment

    prepare_environment()
    from vllm import LLM
    from vllm.platforms import current_platform

    cpu = current_platform.is_cpu()
    if cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)  # as the server's environment sets it
    options = {**engine_options(gpu=not cpu, dtype=dtype), "max_num_seqs": max_num_seqs, "seed": 0}
    if block_size:
        options["block_size"] = block_size
    return LLM(model=model_dir, **options), options


def chat(llm: Any, request: dict) -> dict:
    from vllm import SamplingParams

    params = [SamplingParams(**p) for p in request["params"]]
    started = time.perf_counter()
    outputs = llm.chat(request["conversations"], params, use_tqdm=False)
    seconds = time.perf_counter() - started
    return {
        "texts": [o.outputs[0].text for o in outputs],
        "tokens": [len(o.outputs[0].token_ids) for o in outputs],
        "prompt_tokens": [len(o.prompt_token_ids or []) for o in outputs],
        "seconds": seconds,
    }


def serve(llm: Any, replies: IO[str]) -> None:
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "stop":
            return
        if request["op"] == "reset":
            reply: dict = {"reset": bool(llm.reset_prefix_cache())}
        else:
            reply = chat(llm, request)
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main(reply_fd: int, model_dir: str, max_num_seqs: int, dtype: str, block_size: int | None) -> None:
    replies = os.fdopen(reply_fd, "w", encoding="utf-8")
    started = time.perf_counter()
    llm, options = load(model_dir, max_num_seqs, dtype, block_size)
    load_s = time.perf_counter() - started
    import vllm

    replies.write(json.dumps({"loaded": True, "load_s": load_s, "options": options,
                              "vllm": vllm.__version__}) + "\n")
    replies.flush()
    try:
        serve(llm, replies)
    finally:
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()


if __name__ == "__main__":  # vLLM starts worker processes: the guard is required
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else None)
