"""Prefect flow: the AI-feedback phase of Constitutional AI (Bai et al. 2022, section 4), into DuckDB.

The recipe: validate the run (options, constitution, the whole source), then sample candidates from the policy,
pair them and judge every pair with the feedback model, which fills ``preference_dataset``. The candidates may
instead come from an SL-CAI run (``from_run``: each original answer against its final revision) or from a pair
file (``pairs``, what ``rlaif judge pairs`` runs). As in ``flows/sl_cai.py``, generation is one task holding the
whole async pipeline (Prefect costs about a second per task run, a run makes thousands of engine calls), retries
live in the engine, and a rerun of the flow resumes the run from what DuckDB holds.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from rlaif.config import load_settings
from rlaif.options import PrefsOptions
from rlaif.prefs.runner import PrefsPlan, prepare_prefs, run_prefs


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(settings_overrides: dict, options: PrefsOptions) -> PrefsPlan:
    return prepare_prefs(load_settings(**settings_overrides), options)


@task(name="sample-and-judge", cache_policy=NO_CACHE)
def judge_task(settings_overrides: dict, plan: PrefsPlan, kind: str, show_progress: bool) -> dict:
    summary = run_prefs(load_settings(**settings_overrides), plan, kind=kind, show_progress=show_progress,
                        prefect_flow_run_id=str(flow_run.get_id() or "") or None)
    return summary.as_dict()


@flow(name="rlaif-rl-cai")
def rl_cai_flow(options: PrefsOptions, settings_overrides: dict | None = None, kind: str = "prefs",
                show_progress: bool = True) -> dict:
    """Sample, pair and judge the candidates of every prompt of ``options`` (or judge given pairs); the summary."""
    overrides = settings_overrides or {}
    plan = prepare_task(overrides, options)
    return judge_task(overrides, plan, kind, show_progress)
