"""Training commands: ``rlaif train sft|rm|dpo``, ``rlaif score`` and ``rlaif eval winrate`` (the RL ones,
``rlaif train ppo|grpo``, join ``train_app`` from ``cli/rl.py``).

Each command parses its options and calls one library function (``rlaif.train.runner.run_train``,
``rlaif.train.reward_model.score_responses``, ``rlaif.train.evaluate.run_winrate``); nothing heavy is imported
here. Under ``accelerate launch ... -m rlaif.cli train dpo ...`` every process runs the command and the library
keeps the database to the main one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rlaif.cli._app import app, echo, settings
from rlaif.options import option_help
from rlaif.train.options import TrainOptions

train_app = typer.Typer(help="Train a model: sft (supervised, on sft_dataset), rm (a reward model) and dpo (the DPO "
                        "family: dpo, cdpo, ipo, dpo-norm, simpo) on preference_dataset; ppo and grpo (--baseline "
                        "rloo for RLOO): RL on prompts against a reward.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate trained models against their base.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")

Out = Annotated[Path, typer.Option(help="Output folder: checkpoints, and the trained model in final/.")]
Model = Annotated[Optional[str], typer.Option(help="Base model name or folder (default: the policy model).")]
Lr = Annotated[Optional[float], typer.Option(help="Peak learning rate (AdamW).")]
BatchSize = Annotated[Optional[int], typer.Option(help="Rows per optimizer step, over all processes.")]
MicroBatch = Annotated[Optional[int], typer.Option(help="Rows per forward pass in one process.")]
MaxSteps = Annotated[Optional[int], typer.Option(help="Optimizer steps to run (default: --epochs passes).")]
Epochs = Annotated[Optional[int], typer.Option(help="Passes over the training split.")]
MaxLength = Annotated[Optional[int], typer.Option(help="Tokens per sequence; longer completions are cut.")]
SaveEvery = Annotated[Optional[int], typer.Option(help="Steps between resumable checkpoints (0: only the end).")]
Schedule = Annotated[Optional[str], typer.Option(help="Learning-rate decay: constant | linear | cosine.")]
Seed = Annotated[Optional[int], typer.Option(help="Seed of the batch order and every random draw.")]
Lora = Annotated[bool, typer.Option(help="Train LoRA adapters (peft) instead of every weight; merged on save.")]
LoraR = Annotated[Optional[int], typer.Option(help="LoRA rank.")]
Precision = Annotated[Optional[str], typer.Option(help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16.")]
GradCkpt = Annotated[bool, typer.Option(help="Recompute activations in backward to save memory.")]
ReportTo = Annotated[Optional[str], typer.Option(help=option_help("report_to", TrainOptions))]
JudgeModel = Annotated[Optional[str], typer.Option(
    help="The judge's model (the eval role; default RLAIF_EVAL_MODEL, else the flat model). Best neither the "
         "policy's base nor the model that labelled its data.")]
JudgeMode = Annotated[Optional[str], typer.Option(
    help="The judge's mode: choice | cot | score | contrast (default: what `rlaif judge eval` chose for its engine).")]


def judged_settings(judge_model: Optional[str], judge_mode: Optional[str]):
    """The effective settings with the eval role's model and mode given on this command line."""
    return settings().with_role("eval", model=judge_model, mode=judge_mode)


def _train(kind: str, out: Path, model: Optional[str], values: dict, report_to: Optional[str]) -> None:
    from rlaif.train.runner import is_main_process, run_train

    result = run_train(settings(), kind, out=out, model=model, options={**values, "report_to": report_to}, log=echo)
    if is_main_process() and result.final_path:
        echo(f"model: {result.final_path}\nmetrics: rlaif sql \"SELECT phase, step, name, value FROM train_metrics "
             f"WHERE run_id = '{result.run_id}' ORDER BY phase, step, name\"")


def _common(lr, batch_size, micro_batch_size, max_steps, epochs, max_length, save_every, lr_schedule, seed, lora,
            lora_r, precision, gradient_checkpointing) -> dict:
    return {"lr": lr, "batch_size": batch_size, "micro_batch_size": micro_batch_size, "max_steps": max_steps,
            "epochs": epochs, "max_length": max_length, "save_every": save_every, "lr_schedule": lr_schedule,
            "seed": seed, "lora": lora, "lora_r": lora_r, "precision": precision,
            "gradient_checkpointing": gradient_checkpointing or None}


@train_app.command("sft")
def train_sft(out: Out, model: Model = None, rounds: Annotated[Optional[str], typer.Option(
        help="final: each chain's last revision; all: every round's revision.")] = None,
        train_on: Annotated[Optional[str], typer.Option(
            help="Assistant turns in the loss: last (the answer) | all (earlier turns of the prompt too).")] = None,
        lr: Lr = None, batch_size: BatchSize = None, micro_batch_size: MicroBatch = None, max_steps: MaxSteps = None,
        epochs: Epochs = None, max_length: MaxLength = None, save_every: SaveEvery = None, lr_schedule: Schedule = None,
        seed: Seed = None, lora: Lora = False, lora_r: LoraR = None, precision: Precision = None,
        gradient_checkpointing: GradCkpt = False, report_to: ReportTo = None) -> None:
    """Supervised fine-tuning on sft_dataset (the SL-CAI model); the loss covers the assistant answer only."""
    values = _common(lr, batch_size, micro_batch_size, max_steps, epochs, max_length, save_every, lr_schedule, seed,
                     lora, lora_r, precision, gradient_checkpointing)
    _train("sft", out, model, {**values, "rounds": rounds, "train_on": train_on}, report_to)


@train_app.command("rm")
def train_rm(out: Out, model: Model = None, lr: Lr = None, batch_size: BatchSize = None,
             micro_batch_size: MicroBatch = None, max_steps: MaxSteps = None, epochs: Epochs = None,
             max_length: MaxLength = None, save_every: SaveEvery = None, lr_schedule: Schedule = None,
             seed: Seed = None, lora: Lora = False, lora_r: LoraR = None, precision: Precision = None,
             gradient_checkpointing: GradCkpt = False, report_to: ReportTo = None) -> None:
    """Train a reward model (scalar head, soft-label Bradley-Terry) on preference_dataset; rewards normalised."""
    values = _common(lr, batch_size, micro_batch_size, max_steps, epochs, max_length, save_every, lr_schedule, seed,
                     lora, lora_r, precision, gradient_checkpointing)
    _train("rm", out, model, values, report_to)


@train_app.command("dpo")
def train_dpo(out: Out, model: Model = None, loss: Annotated[Optional[str], typer.Option(
        help="dpo | cdpo | ipo | dpo-norm | simpo")] = None,
        beta: Annotated[Optional[float], typer.Option(help="Inverse temperature (default per loss).")] = None,
        gamma: Annotated[Optional[float], typer.Option(help="SimPO's target margin.")] = None,
        lr: Lr = None, batch_size: BatchSize = None, micro_batch_size: MicroBatch = None, max_steps: MaxSteps = None,
        epochs: Epochs = None, max_length: MaxLength = None, save_every: SaveEvery = None, lr_schedule: Schedule = None,
        seed: Seed = None, lora: Lora = False, lora_r: LoraR = None, precision: Precision = None,
        gradient_checkpointing: GradCkpt = False, report_to: ReportTo = None) -> None:
    """Train the DPO family on preference_dataset; reference log-probs are computed once and cached."""
    values = _common(lr, batch_size, micro_batch_size, max_steps, epochs, max_length, save_every, lr_schedule, seed,
                     lora, lora_r, precision, gradient_checkpointing)
    _train("dpo", out, model, {**values, "loss": loss, "beta": beta, "gamma": gamma}, report_to)


@app.command()
def score(model: Annotated[Path, typer.Option(help="Reward model folder (rlaif train rm's final/).")],
          stage: Annotated[Optional[list[str]], typer.Option(
              help="Generation stages to score (repeatable; default respond and revise).")] = None) -> None:
    """Add reward-model scores of stored responses to the reward_scores table (normalised and raw)."""
    from rlaif.train.evaluate import resolve_policy
    from rlaif.train.reward_model import score_responses

    effective = settings()
    added = score_responses(_store(effective), resolve_policy(model), stages=stage or ("respond", "revise"),
                            device=effective.device, log=echo)
    if added:
        echo("scores: rlaif sql \"SELECT stage, avg(reward) FROM reward_scores GROUP BY stage\"")


@eval_app.command("winrate")
def eval_winrate(policy: Annotated[Path, typer.Option(help="Trained model folder (or a training --out folder).")],
                 prompts: Annotated[str, typer.Option(help="Prompt source (any rlaif.sources spec); its eval-split "
                                                      "prompts are used.")],
                 prompt_column: Annotated[str, typer.Option(help="Column holding the prompt.")] = "prompt",
                 base: Annotated[Optional[str], typer.Option(help="Base model (default: what the policy was "
                                                             "trained from).")] = None,
                 limit: Annotated[Optional[int], typer.Option(help="At most this many prompts.")] = None,
                 split: Annotated[str, typer.Option(help="eval (held-out) | all.")] = "eval",
                 max_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 256,
                 temperature: Annotated[float, typer.Option(help="Sampling temperature of both.")] = 0.7,
                 seed: Annotated[int, typer.Option(help="Seed of both models' sampling.")] = 0,
                 constitution: Annotated[str, typer.Option(help="Constitution of the judge.")] = "harmless",
                 judge_model: JudgeModel = None, judge_mode: JudgeMode = None) -> None:
    """Policy against its base on held-out prompts, judged by the eval role: win rate and length-controlled."""
    from rlaif.train.evaluate import WinRateOptions, run_winrate
    from rlaif.train.options import parse_options

    options = parse_options(WinRateOptions, {"limit": limit, "split": split, "max_tokens": max_tokens,
                                             "temperature": temperature, "seed": seed, "constitution": constitution},
                            what="option")
    r = run_winrate(judged_settings(judge_model, judge_mode), policy=policy, prompts=prompts, base=base,
                    options=options, prompt_column=prompt_column, log=echo)
    echo(f"win rate {r['win_rate']:.3f} [{r['win_rate_low']:.3f}, {r['win_rate_high']:.3f}], length-controlled "
         f"{r['lc_win_rate']:.3f} [{r['lc_win_rate_low']:.3f}, {r['lc_win_rate_high']:.3f}] over {r['prompts']} "
         f"prompts ({r['wins']} won, {r['ties']} tied, {r['losses']} lost)\n"
         f"stored: rlaif sql \"SELECT * FROM winrate_evals WHERE eval_id = '{r['eval_id']}'\"")


def _store(effective):
    from rlaif.runner import open_store

    return open_store(effective)
