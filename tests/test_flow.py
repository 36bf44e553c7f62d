"""The real Prefect flow on a temporary Prefect server: the fake engine for breadth, SmolLM2 for a few prompts."""

from __future__ import annotations

import pytest

from rlaif.demo import demo_options
from rlaif.errors import ConfigError
from rlaif.store import Store

pytestmark = pytest.mark.prefect


def _flow():
    """The flow, imported in the test so that collecting this module does not import Prefect."""
    from rlaif.flows.sl_cai import sl_cai_flow

    return sl_cai_flow


def test_flow_runs_and_links_the_run_to_its_prefect_flow_run(prefect_harness, tmp_path):
    db = tmp_path / "flow.duckdb"
    options = demo_options(limit=6, rounds=2, constitution="example")
    summary = _flow()(options=options, settings_overrides={"db": str(db), "engine": "fake"},
                                       kind="demo", show_progress=False)
    assert summary["prompts"] == 6 and summary["helpful"] == 3 and summary["revisions"] == 3
    assert summary["failed_prompts"] == 0 and summary["comparisons"] == 3

    store = Store(db)
    (run,) = store.fetch("SELECT * FROM runs")
    assert run["status"] == "completed" and run["kind"] == "demo"
    assert run["prefect_flow_run_id"], "the run row must link to its Prefect flow run"
    assert store.fetch("SELECT count(*) AS n FROM revisions")[0]["n"] == 6
    finals = store.fetch("SELECT len(flags) = 0 AS clean, count(*) AS n FROM sft_candidates WHERE final GROUP BY 1")
    assert sum(r["n"] for r in finals) == 6  # the fake's canned revisions may be flagged 'unchanged'
    clean = sum(r["n"] for r in finals if r["clean"])
    assert store.fetch("SELECT count(*) AS n FROM sft_dataset")[0]["n"] == clean >= 3

    again = _flow()(options=options, settings_overrides={"db": str(db), "engine": "fake"}, kind="demo",
                    show_progress=False)
    assert again["engine_calls"] == 0 and again["run_id"] == summary["run_id"] and again["resumed"]


def test_flow_parameters_validate_through_the_options_model(prefect_harness, tmp_path):
    """A deployment's parameters arrive as plain data; the flow validates them with RunOptions."""
    with pytest.raises(Exception, match="rounds"):
        _flow()(options={"prompts": "x.jsonl", "rounds": 0}, settings_overrides={})
    with pytest.raises(ConfigError, match="no such prompt file|x.jsonl"):
        _flow()(options={"prompts": str(tmp_path / "x.jsonl")},
                                 settings_overrides={"db": str(tmp_path / "f.duckdb"), "engine": "fake"})
    assert not (tmp_path / "f.duckdb").exists()


@pytest.mark.real_model
def test_flow_on_the_embedded_model(prefect_harness, tmp_path):
    """SmolLM2 through the real flow: a helpful prompt, two transcript rounds, the judge in its default mode."""
    db = tmp_path / "real.duckdb"
    options = demo_options(limit=3, rounds=2, max_tokens=12)  # built-in prompts 1 and 3 are helpful
    summary = _flow()(options=options, kind="demo", show_progress=False,
                                       settings_overrides={"db": str(db), "engine": "transformers",
                                                           "batch_size": 4})
    assert summary["prompts"] == 3 and summary["helpful"] == 2 and summary["failed_prompts"] == 0
    store = Store(db)
    stages = {r["stage"]: r["n"] for r in store.fetch("SELECT stage, count(*) AS n FROM generations GROUP BY 1")}
    # The transformers engine judges in its measured default mode (rlaif/data/judge_defaults.json): contrast
    # scores each answer of the one pair under the principle's framing and its contrary (four score calls),
    # score rates each answer once, the letter judge reads both orders, cot adds a rationale to each.
    from rlaif.judge.config import default_mode

    mode = default_mode("transformers")
    assert stages == {"respond": 3, "critique": 2, "revise": 2,
                      "judge": {"contrast": 4, "score": 2, "choice": 2, "cot": 4}[mode]}
    (second,) = store.fetch("SELECT messages FROM generations WHERE stage = 'critique' AND len(messages) = "
                            "(SELECT max(len(messages)) FROM generations WHERE stage = 'critique')")
    first = store.fetch("SELECT min(len(messages)) AS n FROM generations WHERE stage = 'critique'")[0]["n"]
    assert len(second["messages"]) == first + 4  # the transcript grew by a critique and a revision exchange
    assert store.fetch("SELECT DISTINCT model FROM responses") == [{"model": "SmolLM2-135M-Instruct"}]
    (judged,) = store.fetch("SELECT mode, p_a FROM comparisons")
    assert judged["mode"] == mode and 0 < judged["p_a"] < 1
