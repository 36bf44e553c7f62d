"""RL with the policy in the loop: one trainer, two kinds of advantage estimator (PPO; GRPO/RLOO).

Each step: sample ``batch_size`` rollouts from the current weights (``rollout``), score them with the combined
reward (``rewards``), compute old and reference log-probs, values and advantages (``rl_step.prepare``), make the
update epochs (``rl_step.optimise``), move the KL coefficient, log the step's metrics, store the rollouts.

What it keeps from the papers and what it changes:
- **PPO** as N+ details (Huang et al. 2024, arXiv 2403.17031) describe it for RLHF: a frozen reference, the
  per-token KL penalty in the reward (k1), the score on the last token, GAE with gamma 1 and lambda 0.95, whitened
  advantages, clipped policy and value losses, several epochs over each batch, a penalty for a response without
  EOS, dropout off, sampling at temperature with no top-k/top-p and log-probs at the same temperature. Ziegler et
  al. 2019's adaptive KL controller moves beta (N+ details fix beta; here ``kl.target=None`` does that). Changed:
  the value head shares the policy's trunk (``rl_model``), where N+ details train a separate critic initialised
  from the reward model; rewards are not whitened (they arrive normalised from the reward model already).
- **Group-relative** (``grpo``: Shao et al. 2024, arXiv 2402.03300; ``rloo``: Ahmadian et al. 2024, arXiv
  2402.14740): K samples per prompt, the baseline from the group, no value model. Changed: the loss is a token
  mean over the minibatch (``rl_step``), and only outcome (sequence) rewards are used.

The run is a ``train_runs`` row (kind = the estimator) through the training layers (``tracking``): its id hashes
the options (the rewards included) and the prompts read, its metrics go to ``train_metrics``, a checkpoint every
``save_every`` steps holds the policy (value head included), the optimizer, the schedule and beta, and a killed
run resumes from its last checkpoint: rollouts and minibatch orders are seeded per step, so the resumed run goes
on exactly as one that was never stopped. The final model is a servable folder like every trainer's.

Rollouts come from ``generate`` in this process (``rollout``) or, with ``rollout.engine = "vllm"``, from a vLLM
server that each update is pushed to (``rl_vllm``; the log-probs of the loss are recomputed here either way).

One process, or several under ``accelerate launch`` (``rl_dist``: rank 0 samples, scores and writes; every
process prepares the whole batch; the gradient passes are sharded under DDP), with the loss of one process on
the same global batch. A GPU is used when present, with bf16 autocast over fp32 weights and a bf16 reference
(untested here: no GPU on these machines).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlaif.errors import ConfigError
from rlaif.stages import derive_seed
from rlaif.store import Writer
from rlaif.train import tracking
from rlaif.train.data import by_split, dataset_version, prompt_ids, read_prompt_rows
from rlaif.train.models import (
    end_of_turn_ids,
    frozen_dtype,
    load_causal_lm,
    load_tokenizer,
    save_model_folder,
    select_device,
    select_precision,
)
from rlaif.train.rewards import CombinedReward, RewardBatch, RewardSource
from rlaif.train.rl_dist import Processes
from rlaif.train.rl_math import AdaptiveKLController
from rlaif.train.rl_model import PolicyValue
from rlaif.train.rl_options import RlOptions
from rlaif.train.rl_records import forget_after, rollout_keys, write_rollouts
from rlaif.train.rl_step import ESTIMATORS, UpdateConfig, optimise, prepare, step_metrics
from rlaif.train.rollout import RolloutPrompt, sample_rollouts

POLICY_FILE, OPTIMIZER_FILE, SCHEDULER_FILE = "policy.pt", "optimizer.pt", "scheduler.pt"


@dataclass
class RlResult:
    run_id: str
    kind: str
    final_path: str | None
    steps: int
    already_done: bool = False


@dataclass
class RlRun:
    """What one run holds while it trains."""

    options: RlOptions
    store: Any
    run_id: str
    out_dir: Path
    device: torch.device
    precision: str
    tokenizer: Any
    eos_ids: list[int]
    policy: PolicyValue
    reference: Any
    optimizer: Any
    scheduler: Any
    controller: AdaptiveKLController
    reward: CombinedReward
    prompts: list[RolloutPrompt]
    log: Callable[[str], None]
    sampler: Any = None  # a VLLMRolloutSampler when rollouts come from a vLLM server, else None (generate)
    procs: Any = None  # rl_dist.Processes
    model: Any = None  # what the gradient passes run through: DDP over ``policy`` on several processes

    def autocast(self) -> Any:
        if self.precision == "bf16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def run_rl(store: Any, *, options: RlOptions, reward: CombinedReward, base_model: str, base_path: Path,
           out_dir: Path, device: str = "auto", judge: RewardSource | None = None,
           prompt_rows: Sequence[dict] | None = None, log: Callable[[str], None] = print,
           prefect_flow_run_id: str | None = None, rollout_url: str | None = None) -> RlResult:
    """Train ``base_path`` with ``options.estimator``; see the module docstring.

    ``prompt_rows`` (``key``, ``prompt_id``, ``messages``, ``split``) are the prompts to train on and hold out;
    by default every prompt of the store. ``judge`` is the monitor's judge (None: no judge score is tracked).
    ``rollout_url`` is the vLLM server (``http://host:port/v1``) of ``rollout.engine = "vllm"``; it serves
    ``base_path``'s model. It is not part of the run's identity: a resumed run may sample on another server.
    """
    if options.rollout.engine == "vllm" and not rollout_url:
        raise ConfigError("rollout engine vllm needs the server's URL (--rollout-url http://127.0.0.1:8000/v1)")
    torch_device = select_device(device)
    precision = select_precision(torch_device, options.precision)
    procs = Processes.start(torch_device, precision)
    log = log if procs.main else (lambda _: None)
    tokenizer = load_tokenizer(base_path)
    eos = end_of_turn_ids(base_path, tokenizer)
    rows = procs.on_main(lambda: _read_rows(store, prompt_rows))
    train_rows, eval_rows = by_split(rows)
    prompts = rollout_prompts(train_rows, tokenizer, options)
    heldout = rollout_prompts(eval_rows, tokenizer, options)[: options.monitor_prompts]
    if len(prompts) < options.prompts_per_step:
        raise ConfigError(f"{len(prompts)} training prompts fit max_length {options.max_length}, fewer than the "
                          f"{options.prompts_per_step} an update needs (batch_size / rollout.samples)")
    if options.batch_size % (options.update.minibatches * procs.world):
        raise ConfigError(f"batch_size {options.batch_size} is not a multiple of update.minibatches "
                          f"{options.update.minibatches} x {procs.world} processes")
    total = options.max_steps or options.epochs * -(-len(prompts) // options.prompts_per_step)
    spec = tracking.RunSpec(options.estimator, options, base_model, "prompts",
                            dataset_version(r["key"] for r in rows), len(train_rows), len(eval_rows),
                            Path(out_dir).resolve(), procs.world, torch_device.type, precision, total,
                            prefect_flow_run_id)
    start = procs.on_main(lambda: tracking.open_run(store, spec))
    if start.completed:
        log(f"run {start.run_id} already completed; its model is at {start.final_path}")
        return RlResult(start.run_id, options.estimator, start.final_path, total, already_done=True)
    log(f"{options.estimator} run {start.run_id}: {len(prompts)} prompts, {total} steps of {options.batch_size} "
        f"rollouts, reward {reward.source}, {procs.world} process(es), {torch_device.type} {precision}"
        + (f", resuming at step {start.resume_step}" if start.resume_from else ""))
    with tracking.run_lock(spec.out_dir) if procs.main else contextlib.nullcontext():
        if procs.main:
            tracking.clear_staging(spec.out_dir)
        try:
            run = _build(store, options, start.run_id, spec.out_dir, torch_device, precision, tokenizer, eos,
                         base_path, reward, prompts, total, log)
            run.procs, run.model = procs, procs.wrap(run.policy)
            final = _fit(run, start, heldout, judge, rollout_url, total, base_model)
        except BaseException as exc:
            if procs.main:
                tracking.finish_run(store, start.run_id, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise
    return RlResult(start.run_id, options.estimator, str(final), total)


def _read_rows(store: Any, given: Sequence[dict] | None) -> list[dict]:
    store.migrate()
    return list(given) if given is not None else read_prompt_rows(store)


def _fit(run: RlRun, start: tracking.RunStart, heldout: list[RolloutPrompt], judge: RewardSource | None,
         rollout_url: str | None, total: int, base_model: str) -> Path:
    """Resume if there is a checkpoint, then train; rank 0 also monitors, samples on vLLM and writes."""
    step = _resume(run, start) if start.resume_from else 0
    main = run.procs.main
    if main:
        forget_after(run.store, run.run_id, step)
    monitor = _monitor(run, heldout, judge) if main else None
    run.sampler = _vllm_sampler(run, rollout_url, step) if main and run.options.rollout.engine == "vllm" else None
    try:
        return _train(run, monitor, step, total, base_model)
    finally:
        if run.sampler is not None:
            run.sampler.close()


def rollout_prompts(rows: Sequence[dict], tokenizer: Any, options: RlOptions) -> list[RolloutPrompt]:
    """Prompt rows as the policy sees them; those leaving fewer than max_new_tokens of max_length are skipped."""
    out = []
    for row in rows:
        ids = prompt_ids(tokenizer, row["messages"])
        if len(ids) + options.rollout.max_new_tokens <= options.max_length:
            messages = tuple({"role": m["role"], "content": m["content"]} for m in row["messages"])
            out.append(RolloutPrompt(row["prompt_id"], messages, tuple(ids)))
    return out


def _build(store: Any, options: RlOptions, run_id: str, out_dir: Path, device: torch.device, precision: str,
           tokenizer: Any, eos: list[int], base_path: Path, reward: CombinedReward,
           prompts: list[RolloutPrompt], total: int, log: Callable[[str], None]) -> RlRun:
    torch.manual_seed(options.seed)  # the value head's init
    lm = load_causal_lm(base_path, lora=options.lora, gradient_checkpointing=options.gradient_checkpointing)
    policy = PolicyValue(lm, value_head=ESTIMATORS[options.estimator].value_head).to(device)
    disable_dropout(policy)  # train mode stays on for gradient checkpointing, with nothing random left in it
    reference = load_causal_lm(base_path, dtype=frozen_dtype(device, precision), trainable=False).to(device)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(options, total))
    controller = AdaptiveKLController(options.kl.coef, options.kl.target, options.kl.horizon)
    return RlRun(options, store, run_id, out_dir, device, precision, tokenizer, eos, policy, reference, optimizer,
                 scheduler, controller, reward, prompts, log)


def _vllm_sampler(run: RlRun, url: str | None, step: int) -> Any:
    """The vLLM sampler, holding the policy's current weights (those of a resumed checkpoint too)."""
    from rlaif.train.rl_vllm import VLLMRolloutSampler

    sampler = VLLMRolloutSampler(str(url), run.out_dir / "rollout-weights", lora=run.options.lora is not None)
    seconds = sampler.push(run.policy.lm, step)
    run.log(f"rollouts from {sampler.url} ({'LoRA adapters' if sampler.lora else 'full weights'} pushed each "
            f"update; first push {seconds:.1f} s)")
    return sampler


def _lr_factor(options: RlOptions, total: int) -> Callable[[int], float]:
    """Linear warm-up, then constant (RL's default here), linear or cosine decay to 0 over ``total`` steps."""

    def factor(step: int) -> float:
        if step < options.warmup_steps:
            return (step + 1) / (options.warmup_steps + 1)
        if options.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - options.warmup_steps) / max(1, total - options.warmup_steps))
        return 1.0 - progress if options.lr_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def disable_dropout(module: torch.nn.Module) -> None:
    """Every dropout probability to 0 (N+ details): the log-probs of an update must be those that sampled."""
    for sub in module.modules():
        if isinstance(sub, torch.nn.Dropout):
            sub.p = 0.0
        config = getattr(sub, "config", None)
        for name in [n for n in dir(config) if n.endswith("dropout")] if config is not None else []:
            if isinstance(getattr(config, name, None), float):
                setattr(config, name, 0.0)


def _monitor(run: RlRun, heldout: list[RolloutPrompt], judge: RewardSource | None) -> Any:
    if not heldout or run.options.monitor_prompts == 0:
        return None
    from rlaif.train.overopt import Monitor

    monitor = Monitor(run.store, run.run_id, heldout, run.reward, judge, run.tokenizer, run.eos_ids,
                      run.options.rollout.max_new_tokens, run.options.rollout.temperature,
                      seed=derive_seed(run.options.seed, "monitor"), micro_batch_size=run.options.micro_batch_size,
                      log=run.log)
    monitor.load_history()
    return monitor


def _train(run: RlRun, monitor: Any, first: int, total: int, base_model: str) -> Path:
    options = run.options
    main = run.procs.main
    writer = Writer(run.store, max_rows=4096, max_age_s=5.0) if main else None
    trackers = tracking.open_trackers(options.report_to, run.out_dir, run.run_id, options) if main else []
    metrics = tracking.MetricsLog(run.store, run.run_id, trackers=trackers) if main else None
    cfg = update_config(options)
    # The judge reward and the monitor's judge record their engine calls in this writer, stored with the rollouts.
    recording = (run.reward.recorded_in(writer, run.run_id, monitor.judge if monitor is not None else None)
                 if main else contextlib.nullcontext())
    with recording:
        if monitor is not None and first == 0:
            with run.autocast():
                monitor.measure(0, run.policy, run.reference)
        for step in range(first, total):
            values = train_step(run, cfg, step, writer)
            if metrics is not None:
                metrics.log(step + 1, values)
            done = step + 1
            if done % 10 == 0 or done == total or done == first + 1:
                run.log(f"step {done}/{total}: reward {values['reward']:.4g}, kl {values['kl']:.4g}, "
                        f"beta {values['kl_coef']:.4g}, length {values['response_length']:.1f}")
            if monitor is not None and options.monitor_every and done % options.monitor_every == 0 and done < total:
                with run.autocast():
                    monitor.measure(done, run.policy, run.reference)
            if options.save_every and done % options.save_every == 0 and done < total:
                if main:
                    writer.flush()
                    metrics.flush()
                    save_checkpoint(run, done, total)
                run.procs.barrier()
        if monitor is not None:
            with run.autocast():
                monitor.measure(total, run.policy, run.reference)
    if main:
        writer.close()
        metrics.close()
    return _save_final(run, total, base_model)


def update_config(options: RlOptions) -> UpdateConfig:
    u = options.update
    return UpdateConfig(options.estimator, options.rollout.temperature, u.epochs, u.minibatches,
                        options.micro_batch_size, u.clip, u.vf_clip, u.vf_coef, u.gamma, u.lam, u.whiten,
                        options.eos_penalty, options.max_grad_norm)


def train_step(run: RlRun, cfg: UpdateConfig, step: int, writer: Writer | None) -> dict[str, float]:
    """Rollouts, rewards, one update and the KL controller: step ``step + 1`` of the run.

    Rank 0 samples and scores, every process gets the rollouts and their total scores (``rl_dist``).
    """
    started, cpu = time.perf_counter(), time.process_time()
    options = run.options
    main = run.procs.main
    rollouts = scores = None
    if main:
        rollouts = _sample(run, _step_prompts(run, step), step)
        prompts = [rollouts.prompt_of(i) for i in range(len(rollouts))]
        scores = run.reward.score(RewardBatch([p.messages for p in prompts], rollouts.texts,
                                              [p.prompt_id for p in prompts], rollouts.ended))
    rollouts, total = run.procs.broadcast((rollouts, scores.total if scores is not None else None))
    beta = run.controller.beta
    generator = torch.Generator().manual_seed(derive_seed(options.seed, "minibatch", step))
    with run.autocast():
        prep = prepare(run.policy, run.reference, rollouts, total, cfg, beta, run.tokenizer.pad_token_id,
                       run.device)
        update = optimise(run.model, run.optimizer, prep, cfg, beta, generator, shard=run.procs.shard(run.model))
    run.scheduler.step()
    run.controller.update(float(prep.seq_kl.mean()), len(rollouts))
    push_s = run.sampler.push(run.policy.lm, step + 1) if run.sampler is not None else 0.0  # before step + 2 samples
    if main:
        write_rollouts(writer, run_id=run.run_id, step=step + 1, rollouts=rollouts,
                       keys=rollout_keys(run.run_id, step + 1, rollouts), rewards=scores,
                       penalised=prep.penalised.tolist(), kl=prep.seq_kl.tolist(),
                       advantages=prep.seq_advantage.tolist(),
                       sampling={"temperature": options.rollout.temperature, "top_p": 1.0, "top_k": 0,
                                 "max_tokens": options.rollout.max_new_tokens})
    values = step_metrics(prep, rollouts, update, beta)
    elapsed = time.perf_counter() - started
    # CPU seconds beside wall seconds: on a shared machine the first says what a step costs, the second what it took
    values.update(lr=run.scheduler.get_last_lr()[0], step_s=elapsed, step_cpu_s=time.process_time() - cpu,
                  update_s=elapsed - rollouts.seconds - push_s, push_s=push_s,
                  rollout_tokens_per_s=rollouts.tokens / max(rollouts.seconds, 1e-9))
    for source, source_scores in (scores.by_source if scores is not None else {}).items():
        given = [v for v in source_scores.values if v is not None]
        values[f"reward/{source}"] = sum(given) / len(given) if given else float("nan")
    return values


def _sample(run: RlRun, batch: list[RolloutPrompt], step: int) -> Any:
    """The rollouts of update ``step + 1``: from the vLLM server when there is one, else ``generate`` here."""
    r = run.options.rollout
    seed = derive_seed(run.options.seed, "rollout", step)
    if run.sampler is not None:
        return run.sampler.sample(batch, k=r.samples, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                                  eos_ids=run.eos_ids, seed=seed, tokenizer=run.tokenizer)
    with run.autocast():
        return sample_rollouts(run.policy.lm, run.tokenizer, batch, k=r.samples, max_new_tokens=r.max_new_tokens,
                               temperature=r.temperature, eos_ids=run.eos_ids, seed=seed, batch_size=r.batch_size)


def _step_prompts(run: RlRun, step: int) -> list[RolloutPrompt]:
    """The prompts of update ``step``: a seeded permutation per epoch over the training prompts, cut in order."""
    per = run.options.prompts_per_step
    n = len(run.prompts)
    epoch, offset = divmod(step * per, n)
    chosen: list[RolloutPrompt] = []
    while len(chosen) < per:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(run.options.seed, "epoch",
                                                                                      epoch))).tolist()
        take = order[offset : offset + per - len(chosen)]
        chosen += [run.prompts[i] for i in take]
        epoch, offset = epoch + 1, 0
    return chosen


def save_checkpoint(run: RlRun, step: int, total: int) -> Path:
    """Policy (with value head), optimizer, schedule and beta, registered through the tracking layer."""
    staged = tracking.staging_dir(run.out_dir, step)
    tracking.clear_staging(run.out_dir)
    staged.mkdir(parents=True)
    torch.save(run.policy.state_dict(), staged / POLICY_FILE)
    torch.save(run.optimizer.state_dict(), staged / OPTIMIZER_FILE)
    torch.save(run.scheduler.state_dict(), staged / SCHEDULER_FILE)
    state = {"run_id": run.run_id, "step": step, "total_steps": total, "kl": run.controller.state()}
    (staged / tracking.STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    path = tracking.commit_checkpoint(run.store, run.run_id, run.out_dir, step, keep=run.options.keep_checkpoints)
    run.log(f"checkpoint at step {step}")
    return path


def _resume(run: RlRun, start: tracking.RunStart) -> int:
    folder = Path(start.resume_from)
    run.policy.load_state_dict(torch.load(folder / POLICY_FILE, map_location=run.device, weights_only=True))
    run.optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, map_location=run.device, weights_only=True))
    run.scheduler.load_state_dict(torch.load(folder / SCHEDULER_FILE, weights_only=True))
    state = json.loads((folder / tracking.STATE_FILE).read_text(encoding="utf-8"))
    run.controller.beta = float(state["kl"]["beta"])
    return int(state["step"])


def _save_final(run: RlRun, total: int, base_model: str) -> Path:
    if not run.procs.main:
        run.procs.barrier()  # rank 0 writes the folder and the rows
        return run.out_dir / tracking.FINAL
    meta = {"kind": run.options.estimator, "run_id": run.run_id, "step": total, "base_model": base_model,
            "options": run.options.model_dump(mode="json")}
    final = save_model_folder(run.policy.lm, run.tokenizer, run.out_dir / tracking.FINAL, meta=meta)
    tracking.register_checkpoint(run.store, run.run_id, "final", total, final)
    tracking.prune_checkpoints(run.store, run.run_id, keep=0)
    tracking.finish_run(run.store, run.run_id, "completed", steps_done=total, final_path=str(final))
    from rlaif.train.model_card import write_model_card

    write_model_card(run.store, final)
    run.log(f"saved {final}")
    run.procs.barrier()
    return final
