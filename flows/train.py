"""Prefect flow: train on the datasets, then evaluate the trained model against its base, as one flow run.

The recipe: train (SFT, reward model or DPO family) into ``out``; if a prompt source is given and the result is a
policy, put it against its base on the held-out prompts. Each step is one task holding a whole library call
(``rlaif.train.runner.run_train``, ``rlaif.train.evaluate.run_winrate``): training resumes from its checkpoints and
the evaluation answers stored engine calls from the database, so a task retry repeats no finished work. Both
record the Prefect flow run id on their rows.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from rlaif.config import load_settings
from rlaif.train.evaluate import WinRateOptions, run_winrate
from rlaif.train.options import parse_options
from rlaif.train.runner import run_train


def _flow_run_id() -> str | None:
    return str(flow_run.get_id()) if flow_run.get_id() else None


@task(name="train", cache_policy=NO_CACHE)
def train_task(settings_overrides: dict, kind: str, out: str, model: str | None, options: dict) -> dict:
    settings = load_settings(**settings_overrides)
    result = run_train(settings, kind, out=Path(out), model=model, options=options,
                       prefect_flow_run_id=_flow_run_id())
    return asdict(result)


@task(name="evaluate-winrate", cache_policy=NO_CACHE)
def winrate_task(settings_overrides: dict, policy: str, prompts: str, base: str | None, options: dict) -> dict:
    settings = load_settings(**settings_overrides)
    report = run_winrate(settings, policy=policy, prompts=prompts, base=base,
                         options=parse_options(WinRateOptions, options, what="option"),
                         prefect_flow_run_id=_flow_run_id())
    return {k: v for k, v in report.items() if k != "created_at"}


@flow(name="rlaif-train")
def train_flow(
    kind: str = "dpo",
    out: str = "train-runs/dpo",
    prompts: str | None = None,
    model: str | None = None,
    base: str | None = None,
    options: dict | None = None,
    eval_options: dict | None = None,
    settings_overrides: dict | None = None,
) -> dict:
    """Train ``kind`` into ``out``; then, for a policy and a prompt source, its win rate against the base."""
    overrides = settings_overrides or {}
    trained = train_task(overrides, kind, out, model, options or {})
    result = {"train": trained}
    if prompts and kind in ("sft", "dpo") and trained["final_path"]:
        result["winrate"] = winrate_task(overrides, trained["final_path"], prompts, base, eval_options or {})
    return result
