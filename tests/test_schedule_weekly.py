"""The weekly deployment as `rlaif schedule` declares it, built by Prefect with no server: the flow it serves, the
dates its schedule fires on (computed by Prefect's own server schedule), its pool and parameters; then the flow
itself, called as a scheduled run would be, trains into that run's ISO-week folder with those parameters.

No server starts here: tests/test_schedule.py runs the nightly deployment end to end against a real one.
"""

from __future__ import annotations

import asyncio
import inspect
from datetime import datetime, timezone
from pathlib import Path

import pytest

from rlaif.flows.deployments import WEEKLY, to_deployments, weekly_parameters
from rlaif.prompts import demo_prompts_path

OVERRIDES = {"db": "/data/rlaif.duckdb", "engine": "fake"}


@pytest.fixture
def weekly(tmp_path: Path):
    """The weekly deployment with the parameters `rlaif schedule --db tmp_path/rlaif.duckdb` gives it."""
    extra = {WEEKLY.name: weekly_parameters(tmp_path / "rlaif.duckdb", None)}
    built = dict((declared.name, deployment) for declared, deployment in to_deployments("test-pool", OVERRIDES, extra))
    assert set(built) == {"nightly-generation", "weekly-train-evaluate"}
    assert built["weekly-train-evaluate"] is not None, "flows/weekly.py or flows/train.py is missing"
    return built["weekly-train-evaluate"]


def test_the_weekly_deployment_serves_the_weekly_flow_from_flows_weekly_py(weekly) -> None:
    from rlaif.flows.weekly import weekly_train_flow

    assert weekly.entrypoint == "flows/weekly.py:weekly_train_flow"
    assert weekly.flow_name == weekly_train_flow.name == "rlaif-weekly-train"
    assert weekly.work_pool_name == "test-pool" and weekly.tags == ["rlaif"]


def test_the_weekly_deployment_fires_on_sundays_at_four_utc(weekly) -> None:
    from prefect.server.schemas.schedules import CronSchedule

    (schedule,) = weekly.schedules
    assert schedule.active and schedule.schedule.cron == "0 4 * * 0"
    assert schedule.schedule.timezone in (None, "UTC")
    fires = asyncio.run(CronSchedule(**schedule.schedule.model_dump()).get_dates(
        n=3, start=datetime(2026, 12, 1, tzinfo=timezone.utc)))
    assert [(d.year, d.month, d.day, d.hour, d.minute) for d in fires] == [
        (2026, 12, 6, 4, 0), (2026, 12, 13, 4, 0), (2026, 12, 20, 4, 0)]  # Sundays, after the nightly 02:00 run
    assert all(d.isoweekday() == 7 and d.utcoffset().total_seconds() == 0 for d in fires)


def test_the_weekly_deployment_parameters_are_what_the_flow_accepts(weekly, tmp_path: Path) -> None:
    from rlaif.flows.weekly import weekly_train_flow

    assert weekly.parameters == {
        "kind": "dpo", "out_root": str(tmp_path.resolve() / "train-runs" / "weekly"),
        "prompts": str(demo_prompts_path()), "settings_overrides": OVERRIDES}
    inspect.signature(weekly_train_flow.fn).bind(**weekly.parameters)  # every one is a parameter of the flow
    assert set(weekly.parameters) <= set(weekly._parameter_openapi_schema.properties)


def test_a_scheduled_weekly_run_trains_into_its_weeks_folder(weekly, monkeypatch) -> None:
    import rlaif.flows.train
    from rlaif.flows.weekly import weekly_train_flow

    calls: list[dict] = []
    monkeypatch.setattr(rlaif.flows.train, "train_flow", lambda **kw: calls.append(kw) or {"train": "recorded"})
    from prefect.runtime import flow_run

    sunday = datetime(2026, 12, 6, 4, 0, tzinfo=timezone.utc)  # what a run the schedule created would say
    monkeypatch.setitem(flow_run.FIELDS, "scheduled_start_time", lambda: sunday)
    assert weekly_train_flow.fn(**weekly.parameters) == {"train": "recorded"}
    out_root = weekly.parameters["out_root"]
    assert calls == [{"kind": "dpo", "out": f"{out_root}/2026-W49", "prompts": str(demo_prompts_path()),
                      "model": None, "base": None, "options": None, "eval_options": None,
                      "settings_overrides": OVERRIDES}]
