"""Prefect flow: the closed loop of ``rlaif.iterate`` (generate, judge, train, evaluate; N times).

The recipe: open the loop's row, then for each iteration run its three steps, each one task holding a whole
library call (``rlaif.iterate.run_step``). A step records itself in ``iteration_steps``, so a rerun of the flow
(or a Prefect retry) skips the steps that completed and resumes the first that did not.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from rlaif.config import load_settings
from rlaif.iterate import STEPS, IterateOptions, close_loop, iterations, open_loop, run_step


@task(name="iterate-open", cache_policy=NO_CACHE)
def open_task(settings_overrides: dict, options: IterateOptions) -> tuple[str, str]:
    from rlaif.runner import open_store

    settings = load_settings(**settings_overrides)
    base_model = options.model or settings.policy.model
    return open_loop(open_store(settings), options, base_model), base_model


@task(name="iterate-step", cache_policy=NO_CACHE, task_run_name="iteration {iteration} {step}")
def step_task(settings_overrides: dict, options: IterateOptions, lid: str, iteration: int, step: str,
              base_model: str) -> dict:
    from rlaif.runner import open_store

    settings = load_settings(**settings_overrides)
    return run_step(settings, open_store(settings), options, lid, iteration, step, base_model)


@flow(name="rlaif-iterate")
def iterate_flow(options: IterateOptions, settings_overrides: dict | None = None) -> list[dict]:
    """Run ``options.iterations`` iterations of the closed loop; returns the ``iterations`` rows."""
    from rlaif.runner import open_store

    overrides = settings_overrides or {}
    lid, base_model = open_task(overrides, options)
    store = open_store(load_settings(**overrides))
    try:
        for iteration in range(1, options.iterations + 1):
            for step in STEPS:
                step_task(overrides, options, lid, iteration, step, base_model)
    except BaseException as exc:
        close_loop(store, lid, "failed", f"{type(exc).__name__}: {exc}"[:500])
        raise
    close_loop(store, lid, "completed")
    return iterations(store, lid)
