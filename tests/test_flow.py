"""The real Prefect flow on a temporary Prefect server, with the fake engine and a real DuckDB file."""

from __future__ import annotations

import pytest

from rlaif.demo import load_flow_module
from rlaif.store import Store

pytestmark = pytest.mark.prefect


def test_cai_flow_runs_and_links_the_run_to_its_prefect_flow_run(prefect_harness, tmp_path):
    db = tmp_path / "flow.duckdb"
    flow = load_flow_module("cai").cai_flow
    summary = flow(constitution="example", limit=5, rounds=2,
                   settings_overrides={"db": str(db), "engine": "fake"}, show_progress=False)
    assert summary["prompts"] == 5 and summary["revisions"] == 5 and summary["failed_prompts"] == 0

    store = Store(db)
    (run,) = store.fetch("SELECT * FROM runs")
    assert run["status"] == "completed" and run["kind"] == "demo"
    assert run["prefect_flow_run_id"], "the run row must link to its Prefect flow run"
    assert store.fetch("SELECT count(*) AS n FROM revisions")[0]["n"] == 10
    assert store.fetch("SELECT count(*) AS n FROM sft_dataset")[0]["n"] == 5


def test_flow_rerun_adds_no_rows(prefect_harness, tmp_path):
    db = tmp_path / "flow.duckdb"
    flow = load_flow_module("cai").cai_flow
    overrides = {"db": str(db), "engine": "fake"}
    flow(constitution="example", limit=3, settings_overrides=overrides, show_progress=False)
    before = Store(db).fetch("SELECT count(*) AS n FROM generations")[0]["n"]
    again = flow(constitution="example", limit=3, settings_overrides=overrides, show_progress=False)
    assert again["engine_calls"] == 0
    assert Store(db).fetch("SELECT count(*) AS n FROM generations")[0]["n"] == before
