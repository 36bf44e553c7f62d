"""Supervised fine-tuning on ``sft_dataset``: the SL-CAI model of Bai et al. 2022 (arXiv 2212.08073, section 3).

Kept from the paper: the model is fine-tuned to give the final revision as its answer to the red-team prompt,
by maximum likelihood on the revision's tokens only (the prompt is context, not target); optionally on every
round's revision (the paper trained on revisions 1-4), with ``rounds="all"``.

Changed, and why: the paper mixed in helpfulness samples from a helpful-only model; here that mix is whatever the
dataset holds (prompts marked helpful keep their unrevised answer upstream). The loss is a token-level mean over
the whole global batch, so long and short answers weigh by their tokens on one process or many, and the loss is
taken on the assistant turn's end-of-turn token too, so the model learns to stop where the engines stop reading.
Earlier assistant turns of a multi-turn prompt stay out of the loss by default: in red-team conversations they
are often the harmful text the revision replaces (``train_on="all"`` includes them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlaif.train.data import SftExample, chunks, pad_right, rank_rows, read_sft_rows, sft_examples
from rlaif.train.logprobs import TokenLogps
from rlaif.train.loop import EVAL_TRAIN_ROWS, Task
from rlaif.train.losses import nll_loss
from rlaif.train.models import load_causal_lm
from rlaif.train.session import Recipe, Setup, save_policy


def make_sft_examples(rows: Sequence[dict], setup: Setup) -> tuple[list[SftExample], int]:
    return sft_examples(rows, setup.tokenizer, end_of_turn=setup.end_of_turn, max_length=setup.options.max_length,
                        train_on=setup.options.train_on)


def sft_nll(model: Any, examples: Sequence[SftExample], setup: Setup) -> tuple[torch.Tensor, float, float]:
    """(summed NLL of the trained tokens, trained tokens, all tokens run) of a micro-batch."""
    ids, attention = pad_right([e.ids for e in examples], setup.tokenizer.pad_token_id)
    mask, _ = pad_right([e.mask for e in examples], 0)
    ids, attention, mask = ids.to(setup.device), attention.to(setup.device), mask.to(setup.device)
    logps = model(ids, attention, mask)
    return nll_loss(logps, mask.float()).sum(), float(mask.sum()), float(attention.sum())


def build_sft_task(setup: Setup, train: list[SftExample], evals: list[SftExample]) -> Task:
    options = setup.options
    lm = load_causal_lm(setup.base_path, lora=options.lora, gradient_checkpointing=options.gradient_checkpointing)
    model = TokenLogps(lm).to(setup.device)

    def loss(module: Any, examples: list[SftExample]) -> tuple[torch.Tensor, dict[str, float]]:
        total, _, tokens = sft_nll(module, examples, setup)
        return total, {"loss": float(total.detach()), "tokens": tokens}

    phases = {"eval": evals, "train": sorted(train, key=lambda e: e.key)[:EVAL_TRAIN_ROWS]}

    def evaluate(module: Any, rank: int, world: int, step: int) -> dict[str, dict[str, float]]:
        out = {}
        for phase, examples in phases.items():
            if not examples:
                continue
            sums = {"nll": 0.0, "trained_tokens": 0.0}
            for group in chunks(rank_rows(range(len(examples)), rank, world), options.micro_batch_size):
                total, trained, _ = sft_nll(module, [examples[i] for i in group], setup)
                sums["nll"] += float(total)
                sums["trained_tokens"] += trained
            out[phase] = sums
        return out

    def summarise(phase: str, sums: dict[str, float]) -> dict[str, float]:
        mean = sums["nll"] / max(sums["trained_tokens"], 1.0)
        return {"loss": mean, "perplexity": float(torch.tensor(mean).exp()), "tokens": sums["trained_tokens"]}

    # The weight of a global batch is its trained tokens: the loss is a mean over tokens, not over rows.
    return Task(model=model, examples=train, lengths=[e.length for e in train], loss=loss,
                weight=lambda examples: sum(sum(e.mask) for e in examples), evaluate=evaluate, summarise=summarise)


SFT_RECIPE = Recipe(kind="sft", dataset="sft_dataset", read_rows=lambda store: read_sft_rows(store),
                    make_examples=make_sft_examples, build_task=build_sft_task, save=save_policy)
SFT_ROUNDS_RECIPE = Recipe(kind="sft", dataset="sft_rounds",
                           read_rows=lambda store: read_sft_rows(store, rounds="all"),
                           make_examples=make_sft_examples, build_task=build_sft_task, save=save_policy)


def train_sft(store: Any, *, options: Any, base_model: str, base_path: Path, out_dir: Path, **kwargs: Any) -> Any:
    """SFT on ``sft_dataset`` (or every round's revision); see ``rlaif.train.session.run_training``."""
    from rlaif.train.session import run_training

    recipe = SFT_ROUNDS_RECIPE if options.rounds == "all" else SFT_RECIPE
    return run_training(recipe, store, options=options, base_model=base_model, base_path=base_path,
                        out_dir=out_dir, **kwargs)
