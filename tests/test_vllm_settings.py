"""The vLLM settings a GPU user needs (context length, tensor parallel size, dtype, quantization, GPU memory
fraction) reach both the `rlaif serve` command line and the in-process engine's ``vllm.LLM`` arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlaif.config import describe_sources, load_settings
from rlaif.engines.vllm_engine import VLLMEngine, llm_kwargs
from rlaif.errors import ConfigError
from rlaif.serve import build_server_command

GPU_SETTINGS = {"serve_max_model_len": 8192, "serve_tensor_parallel": 2, "serve_dtype": "float16",
                "serve_quantization": "fp8", "serve_gpu_memory": 0.55}


def test_defaults_keep_the_measured_cpu_command(tmp_path):
    line = " ".join(build_server_command(load_settings(), tmp_path, 8123, gpu=False, python=Path("/py")))
    assert "--max-model-len 2048" in line and "--max-num-batched-tokens 2048" in line
    for flag in ("--tensor-parallel-size", "--quantization", "--gpu-memory-utilization"):
        assert flag not in line  # vLLM's own defaults: nothing to pass


def test_gpu_settings_reach_the_server_command(tmp_path, monkeypatch):
    monkeypatch.setenv("RLAIF_SERVE_TENSOR_PARALLEL", "2")  # through the environment, as a deployment sets it
    settings = load_settings(**{k: v for k, v in GPU_SETTINGS.items() if k != "serve_tensor_parallel"})
    assert describe_sources()["serve_tensor_parallel"] == "env RLAIF_SERVE_TENSOR_PARALLEL"
    gpu = " ".join(build_server_command(settings, tmp_path, 8123, gpu=True, python=Path("/py")))
    for flag in ("--max-model-len 8192", "--tensor-parallel-size 2", "--dtype float16", "--quantization fp8",
                 "--gpu-memory-utilization 0.55"):
        assert flag in gpu
    cpu = " ".join(build_server_command(settings, tmp_path, 8123, gpu=False, python=Path("/py")))
    assert "--max-num-batched-tokens 8192" in cpu  # a whole prompt still fits one step
    assert "--gpu-memory-utilization" not in cpu  # the CPU's KV cache is VLLM_CPU_KVCACHE_SPACE


def test_gpu_settings_reach_the_in_process_engine(monkeypatch):
    seen: dict = {}

    def fake_init(self, model_path, *, model_name, seed=0, dtype="auto", max_batch=0, llm_options=None):
        seen.update(llm_kwargs(gpu=True, dtype=dtype, seed=seed, llm_options=llm_options))
        seen["cpu"] = llm_kwargs(gpu=False, dtype=dtype, seed=seed, llm_options=llm_options)

    monkeypatch.setattr(VLLMEngine, "__init__", fake_init)
    monkeypatch.setattr("rlaif.models.resolve_model_path", lambda settings: Path("/model"))
    VLLMEngine.from_settings(load_settings(engine="vllm", seed=7, **GPU_SETTINGS))
    assert {k: seen[k] for k in ("max_model_len", "tensor_parallel_size", "dtype", "quantization",
                                 "gpu_memory_utilization", "seed")} == {
        "max_model_len": 8192, "tensor_parallel_size": 2, "dtype": "float16", "quantization": "fp8",
        "gpu_memory_utilization": 0.55, "seed": 7}
    assert "enforce_eager" not in seen
    cpu = seen["cpu"]
    assert cpu["max_num_batched_tokens"] == 8192 and "gpu_memory_utilization" not in cpu and cpu["enforce_eager"]


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("serve_gpu_memory", "1.5", "less than or equal to 1"), ("serve_tensor_parallel", "0", "greater than or equal"),
    ("serve_quantization", "FP8;rm", "match pattern"), ("serve_max_model_len", "10", "greater than or equal")])
def test_bad_values_are_one_line_naming_the_setting(name, value, expected, monkeypatch):
    monkeypatch.setenv(f"RLAIF_{name.upper()}", value)
    with pytest.raises(ConfigError, match=f"setting {name} .from env RLAIF_{name.upper()}.*{expected}"):
        load_settings()
