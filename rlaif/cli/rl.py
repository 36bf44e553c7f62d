"""RL commands: ``rlaif train ppo|grpo`` (on the training group), ``rlaif best-of-n`` and ``rlaif iterate``.

Each command passes what the user typed (None for what was left out, so the per-estimator defaults apply) to
one library call in ``rlaif.train.rl_runner`` or ``rlaif.iterate``; nothing heavy is imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rlaif.cli._app import Prefect, app, echo, overrides, settings
from rlaif.cli.train import JudgeMode, JudgeModel, ReportTo, eval_app, judged_settings, train_app

REWARD_HELP = ("Reward: rm:CKPT | judge | rule:module:function, optionally @WEIGHT; repeat to add rewards "
               "(e.g. --reward rm:runs/rm@1 --reward rule:checks:polite@0.5).")
Rewards = Annotated[list[str], typer.Option("--reward", help=REWARD_HELP)]
Out = Annotated[Path, typer.Option(help="Output folder: checkpoints, and the trained policy in final/.")]
Model = Annotated[Optional[str], typer.Option(help="Policy to start from (default: the policy role's model).")]
Prompts = Annotated[Optional[str], typer.Option(help="Prompt source (default: the database's prompts table); "
                                                     "its eval split is held out for the monitor.")]
MaxSteps = Annotated[Optional[int], typer.Option(help="Updates to run (default: one pass over the prompts).")]
Lr = Annotated[Optional[float], typer.Option(help="Peak learning rate (AdamW; default 3e-6).")]
BatchSize = Annotated[Optional[int], typer.Option(help="Rollouts per update (prompts x samples).")]
MicroBatch = Annotated[Optional[int], typer.Option(help="Sequences per forward pass.")]
Samples = Annotated[Optional[int], typer.Option(help="Samples per prompt (default: PPO 1, GRPO 4).")]
NewTokens = Annotated[Optional[int], typer.Option(help="Tokens per rollout; longer ones are cut (and penalised).")]
Temperature = Annotated[Optional[float], typer.Option(help="Sampling temperature of rollouts (default 0.7).")]
KlCoef = Annotated[Optional[float], typer.Option(help="Initial KL coefficient beta (default: PPO 0.05, GRPO 0.04).")]
KlTarget = Annotated[Optional[float], typer.Option(help="Adaptive KL target in nats; 0 keeps beta fixed.")]
Epochs = Annotated[Optional[int], typer.Option(help="Passes over each rollout batch (default: PPO 4, GRPO 1).")]
SaveEvery = Annotated[Optional[int], typer.Option(help="Updates between resumable checkpoints (0: only the end).")]
MonitorEvery = Annotated[Optional[int], typer.Option(help="Updates between over-optimisation measurements.")]
Seed = Annotated[Optional[int], typer.Option(help="Seed of rollouts, minibatches and the monitor.")]
Judge = Annotated[bool, typer.Option(help="Track the judge's score (the eval role) in the over-optimisation monitor.")]
RolloutUrl = Annotated[Optional[str], typer.Option(help="Sample rollouts on this vLLM server (http://host:port/v1; "
                                                       "`rlaif serve` with serve_weight_updates=true), pushing each "
                                                       "update to it. Default: generate in the trainer.")]


def _rl(estimator: str, out: Path, model: Optional[str], rewards: list[str], prompts: Optional[str],
        monitor_judge: bool, values: dict, judge: tuple[Optional[str], Optional[str]] = (None, None),
        rollout_url: Optional[str] = None) -> None:
    from rlaif.train.rl_runner import run_rl_command
    from rlaif.train.runner import is_main_process

    if rollout_url:
        values["rollout"]["engine"] = "vllm"
    result = run_rl_command(judged_settings(*judge), estimator, out=out, model=model, rewards=rewards, options=values,
                            prompts=prompts, monitor_judge=monitor_judge, log=echo, rollout_url=rollout_url)
    if not is_main_process():
        return
    echo(f"model: {result.final_path}\nmetrics: rlaif sql \"SELECT step, name, value FROM train_metrics WHERE run_id = "
         f"'{result.run_id}' ORDER BY step, name\"\nmonitor: rlaif sql \"SELECT * FROM overopt_records WHERE run_id "
         f"= '{result.run_id}' ORDER BY step\"")


def _values(max_steps, lr, batch_size, micro_batch_size, samples, max_new_tokens, temperature, kl_coef, kl_target,
            epochs, save_every, monitor_every, seed, **extra) -> dict:
    kl = {"coef": kl_coef, "target": kl_target}  # a target of 0 means a fixed beta (RlOptions)
    return {"max_steps": max_steps, "lr": lr, "batch_size": batch_size, "micro_batch_size": micro_batch_size,
            "save_every": save_every, "monitor_every": monitor_every, "seed": seed, **extra,
            "rollout": {"samples": samples, "max_new_tokens": max_new_tokens, "temperature": temperature},
            "update": {"epochs": epochs}, "kl": kl}


@train_app.command("ppo")
def train_ppo(out: Out, reward: Rewards, model: Model = None, prompts: Prompts = None, max_steps: MaxSteps = None,
              lr: Lr = None, batch_size: BatchSize = None, micro_batch_size: MicroBatch = None,
              samples: Samples = None, max_new_tokens: NewTokens = None, temperature: Temperature = None,
              kl_coef: KlCoef = None, kl_target: KlTarget = None, epochs: Epochs = None,
              save_every: SaveEvery = None, monitor_every: MonitorEvery = None, seed: Seed = None,
              monitor_judge: Judge = True, judge_model: JudgeModel = None, judge_mode: JudgeMode = None,
              report_to: ReportTo = None, rollout_url: RolloutUrl = None) -> None:
    """PPO on the prompts: value head, frozen reference, adaptive per-token KL, GAE, clipped losses."""
    _rl("ppo", out, model, reward, prompts, monitor_judge,
        _values(max_steps, lr, batch_size, micro_batch_size, samples, max_new_tokens, temperature, kl_coef,
                kl_target, epochs, save_every, monitor_every, seed, report_to=report_to), (judge_model, judge_mode),
        rollout_url)


@train_app.command("grpo")
def train_grpo(out: Out, reward: Rewards, model: Model = None, prompts: Prompts = None,
               max_steps: MaxSteps = None, baseline: Annotated[str, typer.Option(
                   help="Group baseline: grpo (mean/std of the group) | rloo (leave-one-out).")] = "grpo",
               lr: Lr = None, batch_size: BatchSize = None, micro_batch_size: MicroBatch = None,
               samples: Samples = None, max_new_tokens: NewTokens = None, temperature: Temperature = None,
               kl_coef: KlCoef = None, kl_target: KlTarget = None, epochs: Epochs = None,
               save_every: SaveEvery = None, monitor_every: MonitorEvery = None, seed: Seed = None,
               monitor_judge: Judge = True, judge_model: JudgeModel = None, judge_mode: JudgeMode = None,
               report_to: ReportTo = None, rollout_url: RolloutUrl = None) -> None:
    """Group-relative RL: K samples per prompt, the baseline from the group, no value model."""
    from rlaif.errors import ConfigError

    if baseline not in ("grpo", "rloo"):
        raise ConfigError(f"--baseline must be grpo or rloo, got {baseline!r}")
    _rl(baseline, out, model, reward, prompts, monitor_judge,
        _values(max_steps, lr, batch_size, micro_batch_size, samples, max_new_tokens, temperature, kl_coef,
                kl_target, epochs, save_every, monitor_every, seed, report_to=report_to), (judge_model, judge_mode),
        rollout_url)


@app.command("best-of-n")
def best_of_n(reward: Rewards, n: Annotated[int, typer.Option(help="Answers sampled per prompt.")] = 4,
              prompts: Prompts = None,
              split: Annotated[str, typer.Option(help="Prompts of the train split, eval or all.")] = "train",
              limit: Annotated[Optional[int], typer.Option(help="At most this many prompts.")] = None,
              max_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 256,
              temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
              seed: Seed = None) -> None:
    """Sample N answers per prompt from the policy role, keep the best by reward (SFT rows: best_of_n_sft)."""
    from rlaif.train.rl_runner import run_best_of_n_command

    values = {"n": n, "split": split, "limit": limit, "max_tokens": max_tokens, "temperature": temperature,
              "seed": seed}
    summary = run_best_of_n_command(settings(), rewards=reward, options=values, prompts=prompts, log=echo)
    echo(f"rows: rlaif sql \"SELECT prompt, completion, reward FROM best_of_n_sft WHERE run_id = "
         f"'{summary.run_id}'\"")


@eval_app.command("best-of-n")
def eval_best_of_n(reward: Rewards,
                   prompts: Annotated[str, typer.Option(help="Prompt source; its eval-split prompts are used.")],
                   n: Annotated[int, typer.Option(help="Answers sampled per prompt.")] = 4,
                   base: Annotated[Optional[str], typer.Option(help="Base policy (default: the policy role's "
                                                               "model).")] = None,
                   limit: Annotated[Optional[int], typer.Option(help="At most this many prompts.")] = None,
                   max_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 256,
                   seed: Annotated[int, typer.Option(help="Seed of both sides' samples.")] = 0,
                   judge_model: JudgeModel = None, judge_mode: JudgeMode = None) -> None:
    """Best-of-N against its base policy on held-out prompts, judged by the eval role, beside PPO and DPO results."""
    from rlaif.train.rl_runner import run_best_of_n_eval_command

    rows = run_best_of_n_eval_command(judged_settings(judge_model, judge_mode), rewards=reward, n=n, prompts=prompts,
                                      base=base,
                                      options={"limit": limit, "max_tokens": max_tokens, "seed": seed}, log=echo)
    for r in rows:
        echo(f"{r['method']:10} win rate {r['win_rate']:.3f} [{r['win_rate_low']:.3f}, {r['win_rate_high']:.3f}]"
             f" on {r['prompts']} prompts: {r['policy']}")


@app.command()
def iterate(prompts: Annotated[str, typer.Option(help="Prompt source to generate from and evaluate on.")],
            out: Annotated[Path, typer.Option(help="Folder of the loop's models: OUT/iter-<i>.")],
            iterations: Annotated[int, typer.Option(help="Iterations to run; a rerun resumes.")] = 2,
            trainer: Annotated[str, typer.Option(help="dpo | ppo | grpo")] = "dpo",
            reward: Annotated[Optional[list[str]], typer.Option("--reward", help=REWARD_HELP + " (ppo/grpo)")] = None,
            model: Model = None, limit: Annotated[Optional[int], typer.Option(help="Prompts per generation.")] = None,
            max_steps: MaxSteps = None,
            judge_role: Annotated[str, typer.Option(help="feedback | policy (the policy judges itself).")] = "feedback",
            eval_limit: Annotated[Optional[int], typer.Option(help="Held-out prompts per evaluation.")] = None,
            seed: Annotated[int, typer.Option(help="Seed of every step.")] = 0,
            judge_model: JudgeModel = None, judge_mode: JudgeMode = None,
            prefect: Prefect = True) -> None:
    """The closed loop: generate and judge, train (DPO or RL), evaluate against the previous policy and the base."""
    from rlaif.iterate import IterateOptions
    from rlaif.train.options import parse_options

    options = parse_options(IterateOptions, {
        "prompts": prompts, "out": str(out), "iterations": iterations, "trainer": trainer,
        "rewards": tuple(reward or ()), "model": model, "limit": limit, "judge_role": judge_role, "seed": seed,
        "judge_model": judge_model, "judge_mode": judge_mode,
        "train": {k: v for k, v in {"max_steps": max_steps}.items() if v is not None},
        "eval": {k: v for k, v in {"limit": eval_limit}.items() if v is not None}})
    if prefect:
        from rlaif.flows.iterate import iterate_flow

        rows = iterate_flow(options, settings_overrides=overrides())
    else:
        from rlaif.iterate import run_iterate

        rows = run_iterate(settings(), options, log=echo)
    for row in rows:
        echo(f"iteration {row['iteration']}: win rate vs previous {row['win_rate_vs_previous']}, vs base "
             f"{row['win_rate_vs_base']} ({row['policy_after']})")
