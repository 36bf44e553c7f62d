"""The optimisation loop the SFT, reward-model and DPO trainers share, on one process or many.

A trainer hands the loop a ``Task``: the module to train (the one DDP wraps), its examples, and how to compute
one micro-batch's summed loss. The loop owns everything else: the accelerate set-up (DDP on CPU with gloo or on
GPUs with NCCL, bf16 autocast on CUDA; FSDP/DeepSpeed when ``accelerate launch`` is configured for them), AdamW
and its schedule, gradient accumulation, clipping, metrics, evaluation passes, checkpoints and resume.

**Same loss on 1 or N processes.** A step's global batch is fixed by the batch plan, whatever the process count.
Each process takes every N-th row of it (``data.rank_rows``) in micro-batches, and each micro-batch's loss is
``sum of per-example losses * N / W``, where W is the global batch's weight (its pairs, or its trained tokens for
SFT), known to every process because all of them hold all the data. DDP averages gradients over the N
processes, so the gradient is exactly d(sum over the global batch / W): the same as one process computing
the whole batch, up to the order of floating-point sums.

The scheduler is stepped by the loop itself, once per optimizer step (accelerate's prepared scheduler would
step once per process), and registered so ``save_state`` saves it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlaif.train import tracking
from rlaif.train.data import batch_plan, chunks, rank_rows
from rlaif.train.options import TrainOptions

Stats = dict[str, float]
EVAL_TRAIN_ROWS = 512  # training rows re-measured before and after training (a fixed, key-ordered subset)


@dataclass
class Task:
    """What a trainer plugs into the loop.

    ``loss(model, examples)`` returns (the micro-batch's summed loss, summed statistics); every statistic is
    divided by the global batch's weight except ``tokens`` (a count, for throughput). ``weight(examples)`` is
    the normaliser of a global batch.

    ``evaluate(module, rank, world, step)`` runs this process's share of the whole-split passes and returns
    {phase: summed statistics} (the same names on every process, even for an empty share); the loop sums them
    over the processes and ``summarise(phase, sums)`` turns them into metrics. It gets the unwrapped module, so
    processes may run different numbers of forward passes without DDP's collectives.
    """

    model: nn.Module
    examples: Sequence[Any]
    lengths: list[int]
    loss: Callable[[nn.Module, list[Any]], tuple[torch.Tensor, dict[str, float]]]
    weight: Callable[[list[Any]], float]
    evaluate: Callable[[nn.Module, int, int, int], dict[str, Stats]] | None = None
    summarise: Callable[[str, Stats], Stats] | None = None
    extra_state: dict[str, Any] = field(default_factory=dict)  # saved into trainer_state.json


def make_accelerator(device: torch.device, precision: str) -> Any:
    """An ``Accelerator`` on CPU or CUDA; under ``accelerate launch`` it joins the process group."""
    from accelerate import Accelerator

    return Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if precision == "bf16" else "no")


def lr_factor(options: TrainOptions, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier per step: linear warm-up, then constant, linear or cosine decay to 0."""
    warm = options.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if options.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if options.lr_schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model: nn.Module, options: TrainOptions, total_steps: int) -> tuple[Any, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(options, total_steps))


@dataclass
class LoopContext:
    """Where the loop writes: the store, the run, its folder (the tracking layer is only used on the main process)."""

    store: Any
    run_id: str
    out_dir: Path
    total_steps: int
    start_step: int = 0
    resume_from: Path | None = None
    log: Callable[[str], None] = print


def fit(task: Task, options: TrainOptions, accelerator: Any, ctx: LoopContext) -> nn.Module:
    """Run optimizer steps ``ctx.start_step`` .. ``ctx.total_steps``; returns the prepared (wrapped) model."""
    optimizer, scheduler = make_optimizer(task.model, options, ctx.total_steps)
    model, optimizer = accelerator.prepare(task.model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    if ctx.resume_from is not None:
        accelerator.load_state(str(ctx.resume_from))
    plan = batch_plan(task.lengths, options.batch_size, steps=ctx.total_steps, seed=options.seed)
    metrics = None
    if accelerator.is_main_process:
        trackers = tracking.open_trackers(options.report_to, ctx.out_dir, ctx.run_id, options)
        metrics = tracking.MetricsLog(ctx.store, ctx.run_id, trackers=trackers)
    if ctx.start_step == 0:
        _evaluate(task, model, 0, metrics, accelerator, ctx)
    for step in range(ctx.start_step, ctx.total_steps):
        values = train_step(task, model, optimizer, plan[step], options, accelerator)
        scheduler.step()
        done = step + 1
        if metrics is not None:
            metrics.log(done, values)
        if done % 10 == 0 or done == ctx.total_steps or done == ctx.start_step + 1:
            ctx.log(_progress_line(done, ctx.total_steps, values))
        if options.eval_every and done % options.eval_every == 0 and done < ctx.total_steps:
            _evaluate(task, model, done, metrics, accelerator, ctx)
        if options.save_every and done % options.save_every == 0 and done < ctx.total_steps:
            save_checkpoint(accelerator, ctx, done, options, metrics, task.extra_state)
    _evaluate(task, model, ctx.total_steps, metrics, accelerator, ctx)
    if metrics is not None:
        metrics.close()
    return model


def train_step(task: Task, model: nn.Module, optimizer: Any, batch: Sequence[int], options: TrainOptions,
               accelerator: Any) -> Stats:
    """One optimizer step over one global batch; returns its metrics (the same on every process)."""
    started = time.perf_counter()
    world, rank = accelerator.num_processes, accelerator.process_index
    weight = float(task.weight([task.examples[i] for i in batch]))
    micro = chunks(rank_rows(batch, rank, world), options.micro_batch_size)
    sums: dict[str, float] = {}
    for k, rows in enumerate(micro):
        sync = k == len(micro) - 1  # DDP all-reduces gradients once, after the last micro-batch
        with nullcontext() if sync else accelerator.no_sync(model):
            loss, stats = task.loss(model, [task.examples[i] for i in rows])
            accelerator.backward(loss * (world / weight))
        for name, value in stats.items():
            sums[name] = sums.get(name, 0.0) + float(value)
    limit = options.max_grad_norm if options.max_grad_norm > 0 else float("inf")
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), limit)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    totals = reduce_sums(sums, accelerator)
    elapsed = time.perf_counter() - started
    values = {name: value / weight for name, value in totals.items() if name != "tokens"}
    tokens = totals.get("tokens", 0.0)
    values.update(lr=lr, grad_norm=float(grad_norm), tokens=tokens, step_s=elapsed, tokens_per_s=tokens / elapsed)
    return values


def reduce_sums(sums: dict[str, float], accelerator: Any) -> dict[str, float]:
    """Sum each statistic over the processes (every process must pass the same names, in any order)."""
    if accelerator.num_processes == 1 or not sums:
        return dict(sums)
    names = sorted(sums)
    tensor = torch.tensor([sums[n] for n in names], dtype=torch.float64, device=accelerator.device)
    return dict(zip(names, accelerator.reduce(tensor, reduction="sum").tolist()))


def _evaluate(task: Task, model: nn.Module, step: int, metrics: Any, accelerator: Any, ctx: LoopContext) -> None:
    if task.evaluate is None:
        return
    module = accelerator.unwrap_model(model)
    module.eval()
    with torch.no_grad():
        shares = task.evaluate(module, accelerator.process_index, accelerator.num_processes, step)
    module.train()
    for phase in sorted(shares):
        totals = reduce_sums(shares[phase], accelerator)
        values = task.summarise(phase, totals) if task.summarise else totals
        if metrics is not None:
            metrics.log(step, values, phase=phase)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        ctx.log(f"{phase} @ step {step}: {shown}")


def save_checkpoint(accelerator: Any, ctx: LoopContext, step: int, options: TrainOptions, metrics: Any,
                    extra_state: dict[str, Any]) -> None:
    """Every process writes its part of accelerate's state; the main process commits and registers it."""
    staged = tracking.staging_dir(ctx.out_dir, step)
    if accelerator.is_main_process:
        tracking.clear_staging(ctx.out_dir)
        staged.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staged), safe_serialization=False)  # tied embeddings are shared tensors
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"run_id": ctx.run_id, "step": step, "total_steps": ctx.total_steps, **extra_state}
        (staged / tracking.STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        metrics.flush()  # the metrics up to this step are stored before the checkpoint is registered
        tracking.commit_checkpoint(ctx.store, ctx.run_id, ctx.out_dir, step, keep=options.keep_checkpoints)
        ctx.log(f"checkpoint at step {step}")
    accelerator.wait_for_everyone()


def _progress_line(step: int, total: int, values: Stats) -> str:
    shown = {k: values[k] for k in ("loss", "reward_accuracy", "lr", "tokens_per_s") if k in values}
    return f"step {step}/{total}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items())
