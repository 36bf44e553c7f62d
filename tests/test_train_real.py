"""DPO on the real SmolLM2-135M-Instruct and preference rows the project's own pipeline generated.

The rows come from ``run_generation`` (respond, critique, revise, judge in both orders) into a real DuckDB file,
on a fake engine whose judge prefers the revision whatever slot it is shown in (the fake's default judge is
position-biased, so its debiased preference is always a tie and the dataset would be empty). A few DPO steps must
raise the policy's chosen-over-rejected log-prob margin on its training pairs; the held-out margin is reported.
"""

from __future__ import annotations

import math

import pytest
from train_helpers import metric

from rlaif.config import load_settings
from rlaif.engines.base import ChatRequest, ChoiceRequest, ChoiceResult, ok_attempt
from rlaif.engines.fake import FakeEngine
from rlaif.pipeline import CaiConfig
from rlaif.prompts import load_prompts
from rlaif.runner import run_generation
from rlaif.store import Store
from rlaif.train.runner import run_train

pytestmark = pytest.mark.real_model


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on the shared 2-core machine a second one spins against other load (52 s vs 200 s here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reply(request: ChatRequest) -> str:
    user = request.messages[-1]["content"]
    if request.stage == "revise":
        return f"I would rather not help with that. Please stay safe and ask a friend. ({len(user) % 7})"
    if request.stage == "critique":
        return "The answer helps with something harmful."
    return f"Sure! Here is exactly how to do it: {request.messages[-1]['content'][:40]}"


class PrefersRevisions(FakeEngine):
    """A fake feedback model that picks the option holding the revision, in either slot."""

    async def choose(self, request: ChoiceRequest) -> ChoiceResult:
        options = request.prompt[request.prompt.rfind("Options:"):]
        first, second = options.split("(A) ", 1)[1].split("\n(B) ", 1)
        winner = "A" if "stay safe" in first and "stay safe" not in second else "B"
        logprobs = {c: math.log(0.8 if c == winner else 0.2) for c in request.choices}
        return ChoiceResult(key=request.key, model=self.model, logprobs=logprobs, attempts=[ok_attempt(0.0)])


def test_dpo_on_smollm2_raises_the_margin_on_its_own_generated_pairs(tmp_path, example_constitution):
    settings = load_settings(db=tmp_path / "real.duckdb", engine="fake", device="cpu")
    demo = load_prompts()
    prompts = [p for p in demo if p.split == "train"][:6] + [p for p in demo if p.split == "eval"][:2]
    summary = run_generation(settings, example_constitution, prompts, CaiConfig(rounds=1, max_tokens=32),
                             engine=PrefersRevisions(reply=reply), show_progress=False)
    assert summary.comparisons == 8 and summary.failed_prompts == 0
    options = {"lr": 5e-6, "batch_size": 2, "micro_batch_size": 2, "max_steps": 2, "max_length": 256,
               "lr_schedule": "constant", "save_every": 0}
    result = run_train(settings, "dpo", out=tmp_path / "dpo", model="SmolLM2-135M-Instruct", options=options,
                       log=print)
    store = Store(settings.db)
    train_before, train_after = metric(store, result.run_id, "logp_margin", "train")
    eval_before, eval_after = metric(store, result.run_id, "logp_margin", "eval")
    print(f"training pairs' margin {train_before:.3f} -> {train_after:.3f}; held-out {eval_before:.3f} -> "
          f"{eval_after:.3f}")
    assert train_after > train_before + 1.0
    assert math.isfinite(eval_after)
    (pairs,) = store.fetch("SELECT train_rows, eval_rows FROM train_runs")
    assert (pairs["train_rows"], pairs["eval_rows"]) == (6, 2)
