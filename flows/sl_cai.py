"""Prefect flow: supervised Constitutional AI (Bai et al. 2022, section 3) over a prompt source, into DuckDB.

The recipe: validate the run (options, constitution, the whole prompt source), then generate. Generation is one
task holding the whole async pipeline, because Prefect costs about a second per task run while a run makes
thousands of engine calls; retries live in the engine (bounded backoff per request), and a rerun of the flow
resumes the run from what DuckDB holds, so a task retry would only repeat stored work.

With ``options.judge`` the same flow also judges each original answer against its final revision in both
orders, which fills ``preference_dataset`` (this replaces the former ``flows/cai.py``).
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from rlaif.config import load_settings
from rlaif.options import RunOptions
from rlaif.runner import Plan, prepare, run_sft


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(settings_overrides: dict, options: RunOptions) -> Plan:
    return prepare(load_settings(**settings_overrides), options)


@task(name="generate", cache_policy=NO_CACHE)
def generate_task(settings_overrides: dict, plan: Plan, kind: str, show_progress: bool) -> dict:
    summary = run_sft(load_settings(**settings_overrides), plan, kind=kind, show_progress=show_progress,
                      prefect_flow_run_id=str(flow_run.get_id() or "") or None)
    return summary.as_dict()


@flow(name="rlaif-sl-cai")
def sl_cai_flow(options: RunOptions, settings_overrides: dict | None = None, kind: str = "sft",
                show_progress: bool = True) -> dict:
    """Respond, critique and revise (and judge, if asked) every prompt of ``options.prompts``; returns the summary."""
    overrides = settings_overrides or {}
    plan = prepare_task(overrides, options)
    return generate_task(overrides, plan, kind, show_progress)
