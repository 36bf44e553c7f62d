"""How the orchestration scales: the fake engine, a real DuckDB file, 2,000 and 20,000 prompts.

Each size runs in a fresh subprocess (so peak RSS is that run's alone): it writes N distinct prompts as JSONL,
then runs ``rlaif.runner.generate_sft`` exactly as ``rlaif generate sft --no-prefect --judge`` does, with the
fake engine (instant answers), one critique/revision round and the both-orders judge, into a new DuckDB file.
What is measured is everything around the engine: reading the source, hashing requests, building rows, the
recording engine, asyncio scheduling, Arrow frames and DuckDB writes, the flag passes.

Reported per size: the pipeline's seconds (first prompt in to last row stored: ``RunSummary.seconds``), the
whole run's (validation, migration, pipeline, run-level flags, run row), prompts per second of both, and peak
RSS; then the ratios 20,000 / 2,000 (targets: time <= 10.5x, peak RSS <= 1.2x) and the rate target (>= 1,000
prompts/s at both sizes). ``--baseline DIR`` runs the same workload through an older checkout's
``run_generation`` (the API before ``generate sft``) in the same invocation, for a side-by-side.

    python bench/scale.py                       # both sizes, print the figures
    python bench/scale.py --docs docs/benchmarks.md --baseline /tmp/main-snapshot
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = (2000, 20000)
TARGETS = {"time_ratio": 10.5, "rss_ratio": 1.2, "rate": 1000.0}


def write_prompts(n: int, path: Path) -> None:
    """N distinct prompts: the built-in ones with a numbered suffix."""
    texts = [json.loads(line)["prompt"] for line in (ROOT / "rlaif/data/demo_prompts.jsonl").open(encoding="utf-8")]
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            out.write(json.dumps({"prompt": f"{texts[i % len(texts)]} ({i})"}) + "\n")


def child(n: int, work: Path, baseline: bool) -> dict:
    """One size in this (fresh) process; returns the figures."""
    os.environ["RLAIF_CONFIG"] = str(work / "absent.toml")
    source = work / f"prompts-{n}.jsonl"
    write_prompts(n, source)
    started = time.perf_counter()
    summary = _run_baseline(n, source, work) if baseline else _run_current(source, work / f"scale-{n}.duckdb")
    total = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"prompts": n, "pipeline_s": summary["seconds"], "total_s": total, "peak_rss_mib": peak_mib,
            "failed": summary["failed_prompts"], "engine_calls": summary["engine_calls"]}


def _run_current(source: Path, db: Path) -> dict:
    from rlaif.config import load_settings
    from rlaif.options import RunOptions
    from rlaif.runner import generate_sft

    settings = load_settings(db=db, engine="fake")
    options = RunOptions(prompts=str(source), rounds=1, judge=True)
    return generate_sft(settings, options, show_progress=False, log=lambda line: None).as_dict()


def _run_baseline(n: int, source: Path, work: Path) -> dict:
    """The older API (``CaiConfig`` + ``run_generation`` over a list of prompts): main before ``generate sft``."""
    from rlaif.config import load_settings
    from rlaif.constitution import load_constitution, resolve_constitution
    from rlaif.pipeline import CaiConfig  # type: ignore[attr-defined]
    from rlaif.prompts import load_prompts
    from rlaif.runner import run_generation  # type: ignore[attr-defined]

    settings = load_settings(db=work / f"baseline-{n}.duckdb", engine="fake")
    prompts = load_prompts(source)
    constitution = load_constitution(resolve_constitution("harmless"))
    return run_generation(settings, constitution, prompts, CaiConfig(rounds=1, judge=True),
                          show_progress=False).as_dict()


def spawn(n: int, work: Path, code_dir: Path, baseline: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    args = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--work", str(work)]
    if baseline:
        args.append("--as-baseline")
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=3600, cwd=work)
    if proc.returncode != 0:
        raise SystemExit(f"size {n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _commit() -> str:
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def report(results: dict[str, list[dict]], load_before: str, load_after: str) -> str:
    lines = [
        f"### Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), shared with other "
        f"agents; load average before {load_before}, after {load_after}. Commit {_commit()}. Fake engine, rounds 1, "
        "judge on (both orders), a fresh DuckDB file and a fresh process per size.",
        "",
        "| code | prompts | pipeline s | pipeline prompts/s | whole run s | whole run prompts/s | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in results.items():
        for r in rows:
            lines.append(f"| {name} | {r['prompts']} | {r['pipeline_s']:.2f} | {r['prompts'] / r['pipeline_s']:.0f} | "
                         f"{r['total_s']:.2f} | {r['prompts'] / r['total_s']:.0f} | {r['peak_rss_mib']:.0f} |")
    lines += ["", "| code | time ratio, pipeline (<= 10.5) | time ratio, whole run | peak-RSS ratio (<= 1.2) | "
                  "slowest rate, pipeline (>= 1,000/s) |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, rows in results.items():
        if len(rows) < 2:
            continue
        small, large = rows[0], rows[-1]
        lines.append(
            f"| {name} | {large['pipeline_s'] / small['pipeline_s']:.2f} | {large['total_s'] / small['total_s']:.2f} | "
            f"{large['peak_rss_mib'] / small['peak_rss_mib']:.2f} | "
            f"{min(r['prompts'] / r['pipeline_s'] for r in (small, large)):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--as-baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated prompt counts")
    parser.add_argument("--baseline", type=Path, help="an older checkout to run side by side (before generate sft)")
    parser.add_argument("--docs", type=Path, help="append the figures to this markdown file")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.work, args.as_baseline)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="rlaif-scale-") as tmp:
        for n in sizes:
            results.setdefault("this branch", []).append(spawn(n, Path(tmp), ROOT, baseline=False))
            if args.baseline:
                results.setdefault("baseline", []).append(spawn(n, Path(tmp), args.baseline, baseline=True))
    text = report(results, load_before, " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(text)
    if args.docs:
        with args.docs.open("a", encoding="utf-8") as out:
            out.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
