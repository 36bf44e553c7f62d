"""Prefect flow: the weekly train-and-evaluate run, trained into a folder of its own for each ISO week.

A training output folder belongs to one training run (``rlaif/train/tracking.py`` refuses a folder that holds
another), and each week trains on a new version of the dataset, so a deployment with one fixed ``out`` would
train once and then be refused. This flow trains into ``out_root/<year>-W<week>`` of the run's *scheduled*
time: a retry of the same week finds its own folder and resumes, the next week gets a new one. The rest is
``flows/train.py``'s ``train_flow``, called as a subflow with the same parameters.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run


def week_folder(out_root: str, when: datetime) -> str:
    """``out_root/2026-W49`` for the ISO week of ``when`` (naive times are UTC)."""
    utc = when.astimezone(timezone.utc) if when.tzinfo else when
    year, week, _ = utc.isocalendar()
    return str(Path(out_root) / f"{year}-W{week:02d}")


@flow(name="rlaif-weekly-train")
def weekly_train_flow(
    out_root: str = "train-runs/weekly",
    kind: str = "dpo",
    prompts: str | None = None,
    model: str | None = None,
    base: str | None = None,
    options: dict | None = None,
    eval_options: dict | None = None,
    settings_overrides: dict | None = None,
) -> dict:
    """Train ``kind`` into this week's folder under ``out_root``; then, given prompts, evaluate the result."""
    from rlaif.flows.train import train_flow

    when = flow_run.scheduled_start_time or datetime.now(timezone.utc)
    return train_flow(kind=kind, out=week_folder(out_root, when), prompts=prompts, model=model, base=base,
                      options=options, eval_options=eval_options, settings_overrides=settings_overrides)
