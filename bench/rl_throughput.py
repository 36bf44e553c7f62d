"""RL throughput on SmolLM2 (CPU): rollout tokens/s and trainer step time, PPO and GRPO side by side.

Runs the real trainer (``rlaif.train.rl.run_rl``, DuckDB records included) for a few steps per estimator on the
shipped demo prompts with a trivial rule reward, then reads the per-step metrics it logged: rollout seconds and
tokens, update seconds (forward passes, backward, optimizer), step seconds. The first step is left out of the
medians (allocations, lazy initialisation). It also times the transformers engine's ``generate`` on the same
prompts at the same batch as the rollouts, the reference for what in-process sampling costs.

    python bench/rl_throughput.py --steps 3 --docs docs/benchmarks.md
    python bench/rl_throughput.py --random-init-0.5b --device cuda      # the GPU variant (bf16 autocast on CUDA)

``--random-init-0.5b`` trains a randomly initialised ~0.5B Llama (hidden 1152, 24 layers, SmolLM2's tokenizer,
481M parameters) instead of SmolLM2; written for a GPU run, which no machine here had.

The machine is shared: the load average before and after is printed and written beside the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RULE = '''
def short_and_polite(prompts, completions, **info):
    return [(1.0 if "please" in c.lower() else 0.0) - len(c) / 1000 for c in completions]
'''


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def run_estimator(estimator: str, model: Path, work: Path, args: argparse.Namespace) -> dict[str, float]:
    from rlaif.prompts import load_prompts
    from rlaif.store import Store
    from rlaif.train.rewards import build_reward, parse_reward_specs
    from rlaif.train.rl import run_rl
    from rlaif.train.rl_options import RlOptions

    store = Store(work / f"{estimator}.duckdb")
    store.migrate()
    prompts = load_prompts(limit=64)
    store.insert("prompts", [p.as_row() for p in prompts])
    samples = 1 if estimator == "ppo" else args.group
    opts = RlOptions(estimator=estimator, rewards=("rule:bench_rules:short_and_polite",), lr=1e-6,
                     batch_size=args.batch, micro_batch_size=args.batch, max_steps=args.steps, save_every=0,
                     monitor_prompts=0, max_length=512,
                     rollout={"samples": samples, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch})
    result = run_rl(store, options=opts, reward=build_reward(parse_reward_specs(opts.rewards)),
                    base_model=model.name, base_path=model, out_dir=work / estimator, device=args.device,
                    log=lambda line: print(f"  [{estimator}] {line}", flush=True))
    rows = store.fetch("SELECT step, name, value FROM train_metrics WHERE run_id = ? ORDER BY step", [result.run_id])
    by = {}
    for r in rows:
        by.setdefault(r["name"], []).append(r["value"])
    keep = slice(1, None) if args.steps > 1 else slice(None)
    return {name: statistics.median(by[name][keep]) for name in
            ("step_s", "step_cpu_s", "rollout_s", "update_s", "rollout_tokens", "rollout_tokens_per_s",
             "response_length")}


def random_llama(tokenizer_from: Path, out: Path) -> Path:
    """A randomly initialised ~0.5B-parameter Llama with ``tokenizer_from``'s tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=1152, intermediate_size=4096, num_hidden_layers=24,
                         num_attention_heads=18, num_key_value_heads=6, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig.from_pretrained(tokenizer_from)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"random-init Llama: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters at {out}")
    return out


def engine_reference(model: Path, args: argparse.Namespace) -> float:
    """Tokens/s of the transformers engine generating the same number of sequences at once (ignore_eos)."""
    from rlaif.engines.base import ChatRequest, SamplingParams, run_all
    from rlaif.engines.transformers_engine import TransformersEngine
    from rlaif.prompts import load_prompts

    engine = TransformersEngine(model, model_name=model.name, batch_size=args.batch, device=args.device)
    params = SamplingParams(temperature=0.7, max_tokens=args.max_new_tokens, seed=1, ignore_eos=True)
    prompts = load_prompts(limit=args.batch)
    requests = [ChatRequest(f"k{i}", p.messages, params) for i, p in enumerate(prompts)]
    started = time.perf_counter()
    done = run_all([engine.chat(r) for r in requests])
    seconds = time.perf_counter() - started
    run_all([engine.aclose()])
    return sum(c.completion_tokens or 0 for c in done) / seconds


def markdown(results: dict[str, dict[str, float]], reference: float, args: argparse.Namespace, before: str,
             after: str) -> str:
    import torch

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"#### Run of {now}", "",
        f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), no GPU; torch "
        f"{torch.__version__}, {torch.get_num_threads()} torch thread(s); load average before {before}, after "
        f"{after}. Commit {commit()}. Model {args.model.name}, device {args.device} (bf16 autocast on CUDA, fp32 "
        "on CPU).", "",
        f"Command: `python bench/rl_throughput.py --steps {args.steps} --batch {args.batch} --group {args.group} "
        f"--max-new-tokens {args.max_new_tokens} --threads {args.threads}`", "",
        f"Each step: {args.batch} rollouts of at most {args.max_new_tokens} new tokens (PPO: {args.batch} prompts x 1, "
        f"4 update epochs; GRPO: {args.batch // args.group} prompts x {args.group}, 1 epoch), "
        f"micro-batch {args.batch}. "
        f"Medians over steps 2..{args.steps}.", "",
        "| estimator | step (s) | step CPU (s) | rollout (s) | update (s) | rollout tokens | rollout tokens/s | "
        "mean length |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['step_s']:.1f} | {r['step_cpu_s']:.1f} | {r['rollout_s']:.1f} | "
                     f"{r['update_s']:.1f} | "
                     f"{r['rollout_tokens']:.0f} | {r['rollout_tokens_per_s']:.1f} | {r['response_length']:.1f} |")
    lines += ["", f"Reference: the transformers engine generating {args.batch} sequences of {args.max_new_tokens} "
                  f"tokens at once (ignore_eos): {reference:.1f} tokens/s.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="rollouts per step")
    parser.add_argument("--group", type=int, default=4, help="GRPO samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", type=Path, default=Path.home() / ".cache/rlaif/models/SmolLM2-135M-Instruct")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--random-init-0.5b", dest="random_init", action="store_true",
                        help="a random-init ~0.5B Llama instead of the model (for a GPU run)")
    parser.add_argument("--docs", type=Path, help="append the markdown section to this file")
    args = parser.parse_args()

    from rlaif.environment import prepare_environment

    prepare_environment()
    import torch

    torch.set_num_threads(args.threads)
    before = load()
    work = Path(tempfile.mkdtemp(prefix="rl-bench-"))
    (work / "bench_rules.py").write_text(RULE, encoding="utf-8")
    os.chdir(work)
    if args.random_init:
        args.model = random_llama(args.model, work / "llama-0.5b")
    results = {}
    for name in ("ppo", "grpo"):
        results[name] = run_estimator(name, args.model, work, args)
        print(f"{name}: {results[name]}", flush=True)
    reference = engine_reference(args.model, args)
    text = markdown(results, reference, args, before, load())
    print(text)
    if args.docs:
        with open(ROOT / args.docs if not args.docs.is_absolute() else args.docs, "a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
