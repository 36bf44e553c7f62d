"""Prefect flow: critique-revise-judge over a prompt set, every row into DuckDB.

The recipe: load the constitution and the prompts, then generate. Generation is one task holding the whole
async pipeline, because Prefect costs about a second per task run while a run makes thousands of engine calls;
retries live in the engine (bounded backoff per request), so a task retry would only repeat stored work.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from rlaif.config import load_settings
from rlaif.constitution import Constitution, load_constitution, resolve_constitution
from rlaif.pipeline import CaiConfig
from rlaif.prompts import PromptRow, load_prompts
from rlaif.runner import run_generation


@task(name="load-constitution", cache_policy=NO_CACHE)
def load_constitution_task(name_or_path: str) -> Constitution:
    return load_constitution(resolve_constitution(name_or_path))


@task(name="load-prompts", cache_policy=NO_CACHE)
def load_prompts_task(source: str | None, limit: int | None) -> list[PromptRow]:
    from pathlib import Path

    return load_prompts(Path(source) if source else None, limit=limit)


@task(name="generate", cache_policy=NO_CACHE)
def generate_task(settings_overrides: dict, constitution: Constitution, prompts: list[PromptRow],
                  config: CaiConfig, kind: str, show_progress: bool) -> dict:
    settings = load_settings(**settings_overrides)
    summary = run_generation(settings, constitution, prompts, config, kind=kind, show_progress=show_progress,
                             prefect_flow_run_id=str(flow_run.get_id() or ""))
    return summary.as_dict()


@flow(name="rlaif-cai")
def cai_flow(
    constitution: str = "harmless",
    prompts: str | None = None,
    limit: int | None = None,
    rounds: int = 1,
    max_tokens: int = 160,
    temperature: float = 0.7,
    judge: bool = True,
    kind: str = "demo",
    settings_overrides: dict | None = None,
    show_progress: bool = True,
    ignore_eos: bool = False,
) -> dict:
    """Respond, critique and revise, judge both orders; returns the run summary."""
    config = CaiConfig(rounds=rounds, max_tokens=max_tokens, temperature=temperature, judge=judge,
                       ignore_eos=ignore_eos)
    loaded = load_constitution_task(constitution)
    rows = load_prompts_task(prompts, limit)
    return generate_task(settings_overrides or {}, loaded, rows, config, kind, show_progress)
