"""DPO on the real SmolLM2-135M-Instruct and preference rows the project's own pipeline generated.

The rows come from ``generate_sft`` (respond, critique, revise, judge in both orders) into a real DuckDB file,
on a fake engine whose judge prefers the revision whatever slot it is shown in (the fake's default judge is
position-biased, so its debiased preference is always a tie and the dataset would be empty). A few DPO steps must
raise the policy's chosen-over-rejected log-prob margin on its training pairs; the held-out margin is reported.
"""

from __future__ import annotations

import json
import math

import pytest
from train_helpers import metric

from rlaif.config import load_settings
from rlaif.engines import Engines
from rlaif.engines.base import ChatRequest, ChoiceRequest, ChoiceResult, ok_attempt
from rlaif.engines.fake import FakeEngine
from rlaif.options import RunOptions
from rlaif.prompts import load_prompts
from rlaif.runner import generate_sft
from rlaif.store import Store
from rlaif.train.runner import run_train

pytestmark = [pytest.mark.real_model, pytest.mark.usefixtures("one_torch_thread")]


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
        question = request.prompt[request.prompt.rfind("Options:"):]  # the real question, after the exemplars
        revision_first = question.index("stay safe") < question.index("Sure! Here is")
        winner = "A" if revision_first else "B"
        logprobs = {c: math.log(0.8 if c == winner else 0.2) for c in request.choices}
        return ChoiceResult(key=request.key, model=self.model, logprobs=logprobs, attempts=[ok_attempt(0.0)])


def test_dpo_on_smollm2_raises_the_margin_on_its_own_generated_pairs(tmp_path):
    settings = load_settings(db=tmp_path / "real.duckdb", engine="fake", device="cpu")
    demo = [p for p in load_prompts() if not p.helpful]  # helpful prompts are kept unrevised: no pair
    prompts = [p for p in demo if p.split == "train"][:6] + [p for p in demo if p.split == "eval"][:2]
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"prompt": p.text}) + "\n" for p in prompts), encoding="utf-8")
    engine = PrefersRevisions(reply=reply)
    summary = generate_sft(settings, RunOptions(prompts=str(source), constitution="example", max_tokens=32, judge=True),
                           engines=Engines(engine, engine), show_progress=False, log=lambda line: None)
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
