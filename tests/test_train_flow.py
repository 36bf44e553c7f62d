"""The training flow (flows/train.py) as a real Prefect flow run: train, then the win rate, one flow run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from tiny_model import make_tiny_model_dir
from train_helpers import crafted_store, eval_prompts_file

from rlaif.store import Store

pytestmark = pytest.mark.prefect
REPO = Path(__file__).resolve().parents[1]


def test_train_then_evaluate_as_one_flow_run(prefect_harness, tmp_path, monkeypatch):
    from rlaif.flows.train import train_flow

    torch.set_num_threads(1)
    tiny = make_tiny_model_dir(tmp_path / "tiny")
    db = tmp_path / "flow.duckdb"
    crafted_store(db, pairs=24)
    result = train_flow(kind="dpo", out=str(tmp_path / "dpo"), prompts=str(eval_prompts_file(tmp_path / "p.jsonl")),
                        model=str(tiny), options={"max_steps": 2, "batch_size": 4, "micro_batch_size": 2},
                        eval_options={"max_tokens": 6}, settings_overrides={"db": str(db), "engine": "fake"})
    assert result["train"]["steps"] == 2 and result["winrate"]["prompts"] == 3
    store = Store(db)
    (trained,) = store.fetch("SELECT status, prefect_flow_run_id FROM train_runs")
    (evaluated,) = store.fetch("SELECT status, prefect_flow_run_id FROM runs WHERE kind = 'eval-winrate'")
    assert trained["status"] == evaluated["status"] == "completed"
    assert trained["prefect_flow_run_id"] and trained["prefect_flow_run_id"] == evaluated["prefect_flow_run_id"]
    assert "rlaif.flows.train" in sys.modules
