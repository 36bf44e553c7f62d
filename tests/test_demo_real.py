"""`rlaif demo --limit 2` end to end, as a user runs it: the installed CLI, Prefect, the real SmolLM2 model."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from rlaif.store import Store

pytestmark = [pytest.mark.real_model, pytest.mark.prefect]


def test_demo_on_the_embedded_model(tmp_path):
    db = tmp_path / "demo.duckdb"
    command = [sys.executable, "-m", "rlaif.cli", "--db", str(db), "demo", "--limit", "2", "--max-tokens", "64"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "2 prompts" in proc.stdout and 'rlaif sql "SELECT' in proc.stdout

    store = Store(db)
    (run,) = store.fetch("SELECT * FROM runs")
    assert run["status"] == "completed" and run["engine"] == "transformers"
    assert run["model"] == "SmolLM2-135M-Instruct" and run["prefect_flow_run_id"]
    stages = {r["stage"]: r["n"] for r in store.fetch("SELECT stage, count(*) AS n FROM generations GROUP BY 1")}
    # the first built-in prompt is a helpfulness prompt (kept unrevised), the second a red-team one
    assert stages["respond"] == 2 and stages["critique"] == 1 and stages["revise"] == 1
    assert store.fetch("SELECT count(*) AS n FROM sft_candidates WHERE final")[0]["n"] == 2
    clean = store.fetch("SELECT count(*) AS n FROM sft_candidates WHERE final AND len(flags) = 0")[0]["n"]
    assert store.fetch("SELECT count(*) AS n FROM sft_dataset")[0]["n"] == clean  # flagged rows left out
    judged = store.fetch("SELECT mode, score_a, score_b, p_a FROM comparisons")
    assert len(judged) <= 1
    from rlaif.judge.config import default_config

    config = default_config("transformers")  # the embedded engine's measured default (contrast or score)
    for row in judged:
        assert row["mode"] == config.mode and 0 < row["p_a"] < 1
        if config.mode in ("contrast", "score"):  # p from the two scores through a logistic
            t = config.contrast_temperature if config.mode == "contrast" else config.score_temperature
            assert row["p_a"] == pytest.approx(1 / (1 + math.exp(-(row["score_a"] - row["score_b"]) / t)))
    texts = store.fetch("SELECT output FROM generations WHERE stage = 'respond'")
    assert all(len(r["output"].split()) >= 3 for r in texts)
