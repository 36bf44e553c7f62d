"""One cycle of the closed loop end to end: the fake engine generates and judges, DPO trains the tiny model,
the win-rate evaluation puts the trained model against its base (answers from the tiny models, judged by the
fake engine), and the iteration is recorded with its win rates."""

from __future__ import annotations

import json
import math

import pytest
from rl_helpers import RULE, WORDS, shared_tiny_model, write_rules

from rlaif.iterate import IterateOptions, run_iterate
from rlaif.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def prefer_revisions(request):
    """The fake judge prefers the revision (its text starts from the revision request) in either slot."""
    last = request.prompt.rsplit("Options:", 1)[-1]
    slot_a = last.split("(B)", 1)[0]
    p_a = 0.8 if "Rewrite" in slot_a else 0.2
    return {c: math.log(p_a if c == "A" else 1 - p_a) if c in ("A", "B") else None for c in request.choices}


@pytest.fixture
def decisive_fake_judge(monkeypatch):
    """Every fake engine the loop builds judges with ``prefer_revisions`` (the default prefers slot A, a tie)."""
    from rlaif.engines.fake import FakeEngine

    built = FakeEngine.__init__

    def init(self, *args, **kwargs):
        built(self, *args, **kwargs)
        self.choice_rule = prefer_revisions

    monkeypatch.setattr(FakeEngine, "__init__", init)


TRAINERS = {
    "dpo": {},
    "grpo": {"rewards": (RULE,), "train": {"rollout": {"samples": 4, "max_new_tokens": 6}, "monitor_prompts": 0}},
}


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_one_iterate_cycle(trainer, settings, tmp_path, tmp_path_factory, monkeypatch, decisive_fake_judge):
    tiny = shared_tiny_model(tmp_path_factory)
    monkeypatch.chdir(tmp_path)
    write_rules(tmp_path)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"tell me about the {WORDS[i % len(WORDS)]} number {i}"}) + "\n"
                               for i in range(30)), encoding="utf-8")
    extra = TRAINERS[trainer]
    train = {"max_steps": 2, "batch_size": 8 if trainer == "grpo" else 4, "micro_batch_size": 4, "save_every": 0,
             "max_length": 256, **extra.get("train", {})}
    options = IterateOptions(prompts=str(prompts), out=str(tmp_path / "loop"), iterations=1, model=str(tiny),
                             trainer=trainer, rewards=extra.get("rewards", ()), max_tokens=12, train=train,
                             eval={"max_tokens": 8})
    lines: list[str] = []
    rows = run_iterate(settings, options, log=lines.append)

    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "completed" and row["policy_before"] == str(tiny)
    assert row["policy_after"].endswith("iter-1/final") and row["trainer"] == trainer
    assert 0.0 <= row["win_rate_vs_previous"] <= 1.0 and row["win_rate_vs_base"] == row["win_rate_vs_previous"]
    store = Store(settings.db)
    steps = store.fetch("SELECT step, status FROM iteration_steps ORDER BY started_at")
    assert [(s["step"], s["status"]) for s in steps] == [("generate", "completed"), ("train", "completed"),
                                                        ("evaluate", "completed")]
    assert store.fetch("SELECT count(*) AS n FROM preference_dataset")[0]["n"] > 0
    assert store.fetch("SELECT kind, status FROM train_runs WHERE run_id = ?", [row["train_run_id"]])[0] == \
        {"kind": trainer, "status": "completed"}
    method = store.fetch("SELECT method FROM policy_comparison WHERE eval_id = ?", [row["eval_previous_id"]])
    assert method == [{"method": trainer}]

    lines.clear()
    again = run_iterate(settings, options, log=lines.append)  # a rerun finds every step done
    assert again == rows and sum("done before" in line for line in lines) == 3
