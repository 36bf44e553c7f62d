"""The embedded engine: a transformers causal LM in this process (default: SmolLM2-135M-Instruct on CPU).

It needs no server and no download, which makes it the engine of ``rlaif demo`` and of small runs. Concurrent
``chat``/``choose`` calls are gathered by a ``MicroBatcher`` into one ``generate`` call (or one forward pass) per
batch: on 2 CPU cores that is ~5x the tokens per second of one request at a time (NOTES.md: 27 tok/s at batch 1,
126 at batch 8). Chat and choice batches share one worker thread, so the model runs one batch at a time.

``choose`` reads the judge's answer from log-probs rather than from sampled text, the multiple-choice form of Bai
et al. 2022 (arXiv 2212.08073, section 4.1) and Lee et al. 2023 (arXiv 2309.00267, section 2.1).

torch and transformers are imported inside methods, so importing this module is cheap; the model loads when the
engine is constructed (once per process).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import math
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlaif.engines.base import (
    ChatRequest,
    ChoiceRequest,
    ChoiceResult,
    Completion,
    Message,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    content_hash,
    ok_attempt,
)
from rlaif.engines.batching import BatchedEngine, MicroBatcher
from rlaif.environment import prepare_environment
from rlaif.errors import EngineError
from rlaif.models import resolve_model_path

if TYPE_CHECKING:
    import torch

    from rlaif.config import Settings


class TransformersEngine(BatchedEngine):
    """The engine protocol of ``rlaif.engines.base`` over a local transformers model folder.

    Seeds: ``generate`` samples every row of a batch from one global torch generator, so a seed cannot be given
    per row. The engine seeds per batch instead, from a hash of the batch's request seeds (``batch_seed``): a
    seeded request run again in the same batch composition (alone, for instance) gives the same text (tested on
    CPU, float32), but its text depends on which requests shared its batch. A batch of unseeded requests leaves
    the generator alone.
    """

    name = "transformers"

    def __init__(
        self,
        model_path: Path,
        *,
        model_name: str,
        batch_size: int = 16,
        device: str = "auto",
        torch_threads: int | None = None,
    ):
        prepare_environment()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.model = model_name
        self.device = _pick_device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32  # fp32: CPUs lack fast bf16
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(model_path)
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise EngineError(f"cannot load a transformers model from {model_path}: {exc}") from None
        self._model: Any = model.to(self.device).eval()
        self._tokenizer.padding_side = "left"  # generation appends on the right, so every prompt must end there
        self._eos_ids = _eos_ids(self._model, self._tokenizer)
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token_id = self._eos_ids[0]
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlaif-transformers")
        self._chats: MicroBatcher[ChatRequest, Completion] = MicroBatcher(
            self._generate_batch, max_batch=batch_size, group_key=_sampling_group, executor=self._executor
        )
        self._choices: MicroBatcher[ChoiceRequest, ChoiceResult] = MicroBatcher(
            self._choice_batch, max_batch=batch_size, executor=self._executor
        )
        # Scoring keeps logits for every continuation token (vocabulary-wide), so its batches stay smaller.
        self._scores: MicroBatcher[ScoreRequest, ScoreResult] = MicroBatcher(
            self._score_batch, max_batch=min(batch_size, SCORE_BATCH), executor=self._executor
        )
        self.special_tokens = tuple(self._tokenizer.all_special_tokens)

    @classmethod
    def from_settings(cls, settings: Settings) -> TransformersEngine:
        """Build the engine from ``Settings`` (converting the embedded model on first use)."""
        return cls(
            resolve_model_path(settings),
            model_name=settings.model,
            batch_size=settings.batch_size,
            device=settings.device,
        )

    @property
    def context_length(self) -> int | None:
        """The model's context window, so stages can tell a request that cannot fit before sending it."""
        return getattr(self._model.config, "max_position_embeddings", None) if self._model is not None else None

    def count_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        """Prompt tokens of a chat, encoded exactly as ``_generate_batch`` encodes it."""
        text = self._tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    async def aclose(self) -> None:
        """Let a running batch finish, stop the worker thread and free the model's memory."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._model = None
        gc.collect()
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # --- chat -----------------------------------------------------------------------------------------------

    def _generate_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        """One ``generate`` call for requests that share sampling options (the batcher groups them so)."""
        import torch

        started = time.time()
        if self._model is None:
            raise EngineError("the transformers engine is closed")
        prompts = [self._tokenizer(self._render_chat(r), add_special_tokens=False)["input_ids"] for r in requests]
        seed = batch_seed(r.params.seed for r in requests)
        with torch.inference_mode():
            ids, mask, cache = self._prefill_shared_prefix(prompts, reserve=1)
            if seed is not None:
                torch.manual_seed(seed)
            out = self._model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache,
                                       **self._generate_options(requests[0].params))
        new = out[:, ids.shape[1] :]
        ends = _first_match(new, self._eos_ids).tolist()
        rows = new.tolist()
        texts = self._tokenizer.batch_decode([row[:end] for row, end in zip(rows, ends)], skip_special_tokens=True)
        prompt_tokens = [len(p) for p in prompts]
        latency = time.time() - started
        results = []
        for req, text, end, n_new, n_prompt in zip(requests, texts, ends, [len(r) for r in rows], prompt_tokens):
            text, finish, n_completion = finish_row(text, end, n_new, req.params.stop)
            results.append(
                Completion(
                    key=req.key,
                    model=self.model,
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=int(n_prompt),
                    completion_tokens=n_completion,
                    latency_s=latency,
                    attempts=[ok_attempt(started)],
                )
            )
        return results

    def _render_chat(self, request: ChatRequest) -> str:
        """The prompt text of one chat: the tokenizer's own chat template, ending with the assistant's turn."""
        return self._render_messages(request.messages)

    def _render_messages(self, messages: Sequence[Message]) -> str:
        return self._tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                                   add_generation_prompt=True)

    def _generate_options(self, params: SamplingParams) -> dict[str, Any]:
        """``generate`` keyword arguments for one batch's sampling options (greedy when temperature is 0)."""
        options: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "eos_token_id": self._eos_ids,
            "pad_token_id": self._eos_ids[0],  # finished rows are filled with EOS, which marks where they ended
            "do_sample": params.temperature > 0,
        }
        if params.temperature > 0:
            # top_k=0 turns off transformers' top-k, as in the OpenAI API: only temperature and top_p shape it.
            options.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.ignore_eos:
            options["min_new_tokens"] = params.max_tokens  # masks EOS until max_tokens tokens exist
        if params.stop:
            options.update(stop_strings=list(params.stop), tokenizer=self._tokenizer)
        return options

    # --- scores ---------------------------------------------------------------------------------------------

    def _score_batch(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Teacher forcing: one forward pass over ``template(messages) + continuation`` for the whole batch.

        The continuation is tokenized on its own and appended to the templated prompt's ids, as generation would
        emit it; each of its tokens is scored given everything before it. Requests about one conversation share
        its templated prefix, which ``_prefill_shared_prefix`` runs through the model once.
        """
        started = time.time()
        if self._model is None:
            raise EngineError("the transformers engine is closed")
        rows: list[list[int]] = []
        reads: list[tuple[int, int, str, list[int]]] = []
        prompt_tokens = []
        for index, request in enumerate(requests):
            prompt_ids = self._tokenizer(self._render_messages(request.messages), add_special_tokens=False)["input_ids"]
            continuation = self._tokenizer(request.continuation, add_special_tokens=False)["input_ids"]
            prompt_tokens.append(len(prompt_ids))
            if continuation:
                reads.append((index, len(rows), "", continuation))
                rows.append(prompt_ids + continuation[:-1])
        values: list[list[float]] = [[] for _ in requests]
        for (index, *_), tokens in zip(reads, self._teacher_forced_tokens(rows, reads)):
            values[index] = tokens
        latency = time.time() - started
        return [
            ScoreResult(key=r.key, model=self.model, token_logprobs=v, prompt_tokens=n, latency_s=latency,
                        attempts=[ok_attempt(started)])
            for r, v, n in zip(requests, values, prompt_tokens)
        ]

    # --- choices --------------------------------------------------------------------------------------------

    def _choice_batch(self, requests: list[ChoiceRequest]) -> list[ChoiceResult]:
        """Log-prob of every choice of every request from one forward pass over all needed sequences.

        A one-token choice is read from the next-token distribution after its prompt. A longer choice is scored
        by teacher forcing: the sequence ``prompt + choice[:-1]`` gives the log-prob of each choice token at the
        position before it, and the choice's log-prob is their sum.
        """
        started = time.time()
        if self._model is None:
            raise EngineError("the transformers engine is closed")
        rows: list[list[int]] = []  # token sequences for the forward pass
        reads: list[tuple[int, int, str, list[int]]] = []  # (request index, row, choice, choice token ids)
        prompt_tokens = []
        for index, request in enumerate(requests):
            prompt_ids, choice_ids = self._tokenize_choices(request)
            prompt_tokens.append(len(prompt_ids))
            prompt_row = None
            for choice, ids in choice_ids.items():
                if len(ids) == 1:
                    if prompt_row is None:
                        prompt_row = len(rows)
                        rows.append(prompt_ids)
                    reads.append((index, prompt_row, choice, ids))
                elif ids:
                    reads.append((index, len(rows), choice, ids))
                    rows.append(prompt_ids + ids[:-1])
        sums = self._teacher_forced_sums(rows, reads)
        logprobs: list[dict[str, float | None]] = [{c: None for c in r.choices} for r in requests]
        for (index, _, choice, _), total in zip(reads, sums):
            logprobs[index][choice] = total
        latency = time.time() - started
        return [
            ChoiceResult(
                key=r.key,
                model=self.model,
                logprobs=lp,
                method="logprobs",
                prompt_tokens=n,
                latency_s=latency,
                attempts=[ok_attempt(started)],
            )
            for r, lp, n in zip(requests, logprobs, prompt_tokens)
        ]

    def _tokenize_choices(self, request: ChoiceRequest) -> tuple[list[int], dict[str, list[int]]]:
        """Prompt ids, and each choice's ids as the tokenizer splits it right after the prompt.

        ``encode(prompt + choice)`` minus the prompt's ids gives the tokens the model would actually emit (after
        "The answer is: (" SmolLM2 writes "A", id 49, not " A"). When a merge crosses the boundary, the prompt's
        ids are not a prefix of the joint encoding, and the choice is encoded on its own instead.
        """
        tok = self._tokenizer
        prompt_ids = tok(request.prompt)["input_ids"]
        if not prompt_ids:  # something must come before the first choice token
            prompt_ids = [tok.bos_token_id if tok.bos_token_id is not None else self._eos_ids[0]]
        choice_ids = {}
        for choice in request.choices:
            joint = tok(request.prompt + choice)["input_ids"]
            if len(joint) > len(prompt_ids) and joint[: len(prompt_ids)] == prompt_ids:
                choice_ids[choice] = joint[len(prompt_ids) :]
            else:
                choice_ids[choice] = tok(choice, add_special_tokens=False)["input_ids"]
        return prompt_ids, choice_ids

    def _teacher_forced_sums(self, rows: list[list[int]], reads: list[tuple[int, int, str, list[int]]]) -> list[float]:
        """Sum of log-probs of each read's tokens (see ``_teacher_forced_tokens``)."""
        return [math.fsum(values) for values in self._teacher_forced_tokens(rows, reads)]

    def _teacher_forced_tokens(self, rows: list[list[int]], reads: list[tuple[int, int, str, list[int]]]
                               ) -> list[list[float]]:
        """Log-prob of each of a read's tokens, predicted at the row positions before it.

        A read's ``ids`` are the last ``len(ids)`` tokens the row predicts: the row is ``prefix + ids[:-1]``, left
        padded so that all rows end at the same position. Log-softmax runs one row at a time, so memory stays at
        one row's ``keep x vocabulary`` floats beyond the logits themselves.
        """
        import torch

        if not reads:
            return []
        keep = max(len(ids) for *_, ids in reads)  # only the last ``keep`` positions are ever read
        out: list[list[float]] = []
        with torch.inference_mode():
            logits = self._last_logits(rows, keep)
            by_row: dict[int, Any] = {}
            for _, row, _, ids in reads:  # token j is predicted at kept position keep - len(ids) + j
                if row not in by_row:
                    by_row[row] = logits[row].float().log_softmax(dim=-1)
                positions = torch.arange(keep - len(ids), keep)
                picked = by_row[row][positions, torch.tensor(ids)].double()
                out.append(picked.cpu().tolist())
        return out

    def _last_logits(self, rows: list[list[int]], keep: int) -> torch.Tensor:
        """Logits over the vocabulary at the last ``keep`` positions of each row (all rows end together)."""
        ids, mask, cache = self._prefill_shared_prefix(rows, reserve=keep)
        cached = cache.get_seq_length() if cache is not None else 0
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # real tokens count from 0 whatever the padding
        out = self._model(
            input_ids=ids[:, cached:],
            attention_mask=mask,
            position_ids=positions[:, cached:],
            past_key_values=cache,
            logits_to_keep=keep,
            use_cache=cache is not None,
        )
        return out.logits

    def _prefill_shared_prefix(self, rows: list[list[int]], reserve: int) -> tuple[Any, Any, Any]:
        """Pad a batch for the model, running the prefix every row shares only once.

        Critique, revision and judge prompts all begin with the constitution's few-shot exemplars, hundreds of
        tokens that are the same in every row; on a CPU their prefill dominates a batch. The shared prefix goes
        through the model once, its KV cache is repeated for each row, and each row's own suffix is left-padded
        after it (padding in the middle; positions follow the attention mask, so the model sees no gap). Returns
        ``(ids, mask, cache)`` where ``cache`` holds the prefix (None when no prefix is worth sharing) and
        ``ids``/``mask`` cover prefix + padded suffixes. ``reserve`` tokens of every row stay out of the prefix.
        """
        import torch

        shared = shared_prefix_len(rows, reserve) if len(rows) > 1 else 0
        width = shared + max(len(r) - shared for r in rows)
        ids = torch.full((len(rows), width), self._tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :shared] = torch.tensor(row[:shared], dtype=torch.long)
            mask[i, :shared] = 1
            ids[i, width - (len(row) - shared) :] = torch.tensor(row[shared:], dtype=torch.long)
            mask[i, width - (len(row) - shared) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        if not shared:
            return ids, mask, None
        from transformers import DynamicCache

        cache = DynamicCache(config=self._model.config)
        self._model(input_ids=ids[:1, :shared], past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(len(rows))
        return ids, mask, cache


SCORE_BATCH = 8  # requests per scoring forward pass: logits of every continuation token are kept
MIN_SHARED_PREFIX = 32  # tokens: below this, a separate prefix pass costs more than it saves


def shared_prefix_len(rows: Sequence[Sequence[int]], reserve: int) -> int:
    """Length of the token prefix all rows share, leaving at least ``reserve`` tokens of each row after it.

    Returns 0 when the shared part is shorter than ``MIN_SHARED_PREFIX``.
    """
    limit = min(len(r) for r in rows) - reserve
    first = rows[0]
    n = 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return n if n >= MIN_SHARED_PREFIX else 0


def batch_seed(seeds: Iterable[int | None]) -> int | None:
    """One torch seed for a batch from its requests' seeds (order-free); None when no request has a seed."""
    given = sorted(s for s in seeds if s is not None)
    if not given:
        return None
    return int(content_hash("transformers-batch-seed", given, length=16), 16)  # 64 bits, what manual_seed takes


def finish_row(text: str, end: int, generated: int, stops: Sequence[str]) -> tuple[str, str, int]:
    """Text, finish reason and completion tokens of one generated row.

    ``end`` is the index of the row's first EOS/padding token (``generated`` when there is none). A stop string
    ends the text just before its first occurrence (finish "stop"; the tokens up to where generation stopped
    are counted); an EOS gives "stop" and counts the EOS token, as OpenAI-compatible servers do; otherwise the
    row ran out of tokens ("length").
    """
    cuts = [text.find(s) for s in stops if s and s in text]
    if cuts:
        return text[: min(cuts)], "stop", end
    if end < generated:
        return text, "stop", end + 1
    return text, "length", generated


def _first_match(tokens: torch.Tensor, targets: Sequence[int]) -> torch.Tensor:
    """Per row, the index of the first token in ``targets``, or the row length when there is none."""
    import torch

    hits = torch.isin(tokens, torch.tensor(list(targets), device=tokens.device))
    first = hits.int().argmax(dim=1)
    return torch.where(hits.any(dim=1), first, torch.full_like(first, tokens.shape[1])).cpu()


def _sampling_group(request: ChatRequest) -> SamplingParams:
    """Requests that differ only in seed can share a ``generate`` call; any other option splits them."""
    return dataclasses.replace(request.params, seed=None)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The token ids that end a reply: the generation config's EOS id(s), else the tokenizer's."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in ids if i is not None] or [tokenizer.eos_token_id]
    if ids[0] is None:
        raise EngineError("the model defines no end-of-sequence token; cannot tell where a reply ends")
    return [int(i) for i in ids]


def _pick_device(device: str) -> torch.device:
    """``auto`` means CUDA when torch sees a GPU, else CPU; asking for CUDA without one is a user error."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} requested but torch sees no CUDA GPU (use device=cpu or auto)")
    return torch.device(device)
