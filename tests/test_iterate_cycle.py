"""One cycle of the closed loop end to end: the fake engine generates and judges, DPO trains the tiny model,
the win-rate evaluation puts the trained model against its base (answers from the tiny models, judged by the
fake engine), and the iteration is recorded with its win rates."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from rl_helpers import WORDS, shared_tiny_model  # noqa: E402

from rlaif.iterate import IterateOptions, run_iterate  # noqa: E402
from rlaif.store import Store  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_rl_train.one_thread
    yield
    torch.set_num_threads(before)


def test_one_iterate_cycle(settings, tmp_path, tmp_path_factory):
    tiny = shared_tiny_model(tmp_path_factory)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"tell me about the {WORDS[i % len(WORDS)]} number {i}"}) + "\n"
                               for i in range(30)), encoding="utf-8")
    options = IterateOptions(prompts=str(prompts), out=str(tmp_path / "loop"), iterations=1, model=str(tiny),
                             max_tokens=12, train={"max_steps": 2, "batch_size": 4, "micro_batch_size": 4,
                                                   "save_every": 0, "max_length": 256},
                             eval={"max_tokens": 8})
    lines: list[str] = []
    rows = run_iterate(settings, options, log=lines.append)

    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "completed" and row["policy_before"] == str(tiny)
    assert row["policy_after"].endswith("iter-1/final") and row["trainer"] == "dpo"
    assert 0.0 <= row["win_rate_vs_previous"] <= 1.0 and row["win_rate_vs_base"] == row["win_rate_vs_previous"]
    store = Store(settings.db)
    steps = store.fetch("SELECT step, status FROM iteration_steps ORDER BY started_at")
    assert [(s["step"], s["status"]) for s in steps] == [("generate", "completed"), ("train", "completed"),
                                                        ("evaluate", "completed")]
    assert store.fetch("SELECT count(*) AS n FROM preference_dataset")[0]["n"] > 0
    assert store.fetch("SELECT kind, status FROM train_runs WHERE run_id = ?", [row["train_run_id"]])[0] == \
        {"kind": "dpo", "status": "completed"}
    method = store.fetch("SELECT method FROM policy_comparison WHERE eval_id = ?", [row["eval_previous_id"]])
    assert method == [{"method": "dpo"}]

    lines.clear()
    again = run_iterate(settings, options, log=lines.append)  # a rerun finds every step done
    assert again == rows and sum("done before" in line for line in lines) == 3
