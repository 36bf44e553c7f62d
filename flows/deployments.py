"""The project's Prefect deployments: a nightly generation run and a weekly train-and-evaluate run.

Deployments go to a work pool, and a worker polling that pool starts each run in a process of its own. The same
declarations serve every pool type: ``rlaif schedule`` deploys them to a local process pool, and
``deploy/prefect.yaml`` declares the same names, schedules and parameters for Docker and Kubernetes pools (a test
keeps the two in step). ``flow.serve`` would be simpler on one machine, but it ties the schedules to one long-lived
Python process that runs every flow itself; a pool lets the runs move to other machines without redeploying.

Schedules are cron strings in UTC. The nightly run comes first (02:00); the weekly one (Sunday 04:00) trains on
what the nights made and evaluates the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Declared:
    """One deployment: the flow (file and function under flows/), its cron schedule and default parameters."""

    name: str
    file: str
    function: str
    cron: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    requires: str = ""  # another flow file it runs (deployed only once that file is in this rlaif)

    @property
    def entrypoint(self) -> str:
        return f"flows/{self.file}:{self.function}"

    @property
    def needs(self) -> tuple[str, ...]:
        return (self.file, self.requires) if self.requires else (self.file,)


NIGHTLY = Declared(
    name="nightly-generation", file="sl_cai.py", function="sl_cai_flow", cron="0 2 * * *",
    description="Critique-revise and judge the prompt set into the project database, every night.",
    # `options` is a RunOptions; `rlaif schedule` adds the prompt source (nightly_options).
    parameters={"options": {"constitution": "harmless", "rounds": 1, "judge": True}, "kind": "sft",
                "show_progress": False},
)
WEEKLY = Declared(
    name="weekly-train-evaluate", file="weekly.py", function="weekly_train_flow", cron="0 4 * * 0",
    description="Train on the week's data and evaluate the result, every Sunday.",
    # flows/weekly.py runs flows/train.py's train_flow in a folder per ISO week; `rlaif schedule` adds out_root
    # (beside the database) and the prompts the evaluation holds out (the nightly source).
    parameters={"kind": "dpo"}, requires="train.py",
)
DEPLOYMENTS = (NIGHTLY, WEEKLY)


def nightly_options(prompts: str | None, limit: int | None) -> dict[str, Any]:
    """The nightly run's options: the given prompt source, or the built-in set (its helpful prompts marked)."""
    from rlaif.options import RunOptions
    from rlaif.prompts import demo_prompts_path

    source = {"prompts": prompts} if prompts else {"prompts": str(demo_prompts_path()), "helpful_column": "category"}
    options = {**NIGHTLY.parameters["options"], **source, **({"limit": limit} if limit else {})}
    RunOptions.parse(**options)  # a bad value is one line now, not a failed run at 2 a.m.
    return options


def weekly_parameters(db: Path, prompts: str | None) -> dict[str, Any]:
    """The weekly run's folders and evaluation prompts: training under the database's folder."""
    from rlaif.prompts import demo_prompts_path

    return {"out_root": str(Path(db).resolve().parent / "train-runs" / "weekly"),
            "prompts": prompts or str(demo_prompts_path())}


def project_root() -> Path:
    """The folder that holds flows/: the repository in a checkout, the installed ``rlaif`` package in a wheel."""
    import rlaif.flows

    return Path(rlaif.flows.__path__[0]).parent


def to_deployments(pool: str, settings_overrides: dict[str, Any], extra: dict[str, dict[str, Any]] | None = None
                   ) -> list[tuple[Declared, Any]]:
    """Every declared deployment as Prefect's ``RunnerDeployment``, built here with no server; returns (declared,
    deployment or None).

    ``settings_overrides`` goes to each flow's ``settings_overrides`` parameter (the database path and the
    engine options given to ``rlaif schedule``); ``extra`` adds parameters per deployment name. A deployment
    whose flow is not in this rlaif yet comes with None.
    """
    from prefect import flow

    root = project_root()
    built: list[tuple[Declared, Any]] = []
    for declared in DEPLOYMENTS:
        if not all((root / "flows" / file).is_file() for file in declared.needs):
            built.append((declared, None))
            continue
        loaded = flow.from_source(source=str(root), entrypoint=declared.entrypoint)
        parameters = {**declared.parameters, **(extra or {}).get(declared.name, {}),
                      "settings_overrides": settings_overrides}
        built.append((declared, loaded.to_deployment(name=declared.name, cron=declared.cron, parameters=parameters,
                                                     description=declared.description, work_pool_name=pool,
                                                     tags=["rlaif"])))
    return built


def deploy_all(api_url: str, pool: str, settings_overrides: dict[str, Any],
               extra: dict[str, dict[str, Any]] | None = None) -> list[tuple[Declared, str | None]]:
    """Create or update every deployment of ``to_deployments`` on the server at ``api_url``; returns (declared,
    deployment id or None), None for a deployment whose flow is not in this rlaif yet (not created)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return [(declared, None if deployment is None else str(deployment.apply()))
                for declared, deployment in to_deployments(pool, settings_overrides, extra)]
