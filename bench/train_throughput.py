"""Training throughput against TRL, like for like: DPO against DPOTrainer, the reward model against RewardTrainer.

Every side trains SmolLM2-135M-Instruct for one epoch over the same preference pairs, in fp32 without gradient
checkpointing (TRL defaults to bf16 and checkpointing: both are turned off), at the same batch size (pairs per
step) and the same maximum length, with the same number of torch threads, one side after the other, each in a
fresh process so its peak memory (``ru_maxrss``) is its own. Reported per side: tokens per second of the training
steps (tokens = prompt + answer tokens of both sequences of each pair, as that side tokenized them; time = the
sum of its optimizer steps), the one-time reference pass apart and included, and peak memory.

DPO runs three sides: TRL with its default ``precompute_ref_log_probs=False`` (a second copy of the model as
reference in the loop), TRL with ``precompute_ref_log_probs=True`` (reference log-probs computed once before
training, at the same reference batch size as ours), and rlaif, which always computes them once. The headline
ratio is rlaif against TRL with precomputing, both counting their one-time pass: the same work on both sides.
The reward model runs two: TRL's ``RewardTrainer`` on ``AutoModelForSequenceClassification`` and rlaif's
``train rm`` (whose normalisation pass over the reference answers after training is timed apart: TRL has none).

The pairs: the shipped demo prompts, each with a chosen and a rejected answer of deterministic varied lengths
(8 to 120 words), stored through rlaif's own tables (so rlaif reads ``preference_dataset``) and given to TRL as the
same conversations in its conversational format.

    HF_HUB_OFFLINE=1 python bench/train_throughput.py --pairs 24 --batch 4 --docs docs/benchmarks.md

``--random-model 0.5b`` trains a random-init ~0.5B Llama instead (bf16 on a GPU; reports MFU from
``--peak-tflops``). Not run here: no GPU was lent to this issue.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

WORDS = ("safety matters because people trust careful answers that explain the risks and suggest a better way to "
         "reach the goal without harm while staying honest about what is known").split()


def answer(seed: int, words: int) -> str:
    return " ".join(WORDS[(seed * 7 + j * 3) % len(WORDS)] for j in range(words)).capitalize() + "."


def make_pairs(count: int) -> list[dict]:
    """``count`` (prompt, chosen, rejected, p_chosen) rows over the demo prompts, lengths 8-120 words."""
    from rlaif.prompts import load_prompts

    prompts = [p for p in load_prompts() if p.split == "train"]
    pairs = []
    for i in range(count):
        prompt = prompts[i % len(prompts)]
        pairs.append({"prompt": prompt, "chosen": answer(i, 8 + (i * 37) % 113),
                      "rejected": answer(i + 1, 8 + (i * 53 + 17) % 113), "p_chosen": 0.7 + 0.2 * (i % 2)})
    return pairs


def write_data(folder: Path, count: int) -> None:
    """The same pairs as rlaif tables (data.duckdb) and as TRL conversations (pairs.jsonl)."""
    from rlaif.store import Store, utcnow

    store = Store(folder / "data.duckdb")
    store.migrate()
    prompts, comparisons, lines = {}, [], []
    for i, pair in enumerate(make_pairs(count)):
        prompt = pair["prompt"]
        prompts[prompt.prompt_id] = prompt.as_row()
        comparisons.append({
            "comparison_id": f"c{i}", "pair_id": f"p{i}", "run_id": "bench", "prompt_id": prompt.prompt_id,
            "principle_id": "bench", "response_a": pair["chosen"], "response_b": pair["rejected"],
            "p_a": pair["p_chosen"], "consistent": True, "method": "logprobs", "judge_model": "bench",
            "constitution_name": "bench", "constitution_version": "v", "created_at": utcnow()})
        lines.append(json.dumps({"prompt": [dict(m) for m in prompt.messages],
                                 "chosen": [{"role": "assistant", "content": pair["chosen"]}],
                                 "rejected": [{"role": "assistant", "content": pair["rejected"]}]}))
    store.write({"prompts": list(prompts.values()), "comparisons": comparisons})
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- the two sides, each in its own process ------------------------------------------------------------------


def run_ours(args: argparse.Namespace, folder: Path, kind: str = "dpo") -> dict:
    import torch

    import rlaif.train.dpo as dpo
    import rlaif.train.reward_model as rm
    from rlaif.config import load_settings
    from rlaif.store import Store
    from rlaif.train.runner import run_train

    torch.set_num_threads(args.threads)
    timed = {"reference_s": 0.0}
    if kind == "dpo":  # the one-time reference pass, timed apart from the steps
        dpo.reference_logps = _timed(dpo.reference_logps, timed)
    else:  # the normalisation pass over the reference answers after training
        rm._reference_sums = _timed(rm._reference_sums, timed)
    settings = load_settings(db=folder / "data.duckdb", engine="fake", device=args.device)
    steps = args.pairs // args.batch
    options = {"batch_size": args.batch, "micro_batch_size": args.batch, "max_steps": steps, "lr": 1e-6,
               "max_length": args.max_length, "save_every": 0, "precision": "bf16" if args.random_model else "fp32"}
    if kind == "dpo":
        options["ref_batch_size"] = 2 * args.batch
    run = run_train(settings, kind, out=folder / f"ours-{kind}", model=args.model, options=options,
                    log=lambda _: None)
    rows = Store(settings.db).fetch("SELECT name, sum(value) AS total FROM train_metrics WHERE run_id = ? AND "
                                    "phase = 'step' AND name IN ('tokens', 'step_s') GROUP BY name", [run.run_id])
    totals = {r["name"]: r["total"] for r in rows}
    return {"side": f"rlaif-{kind}", "steps": steps, "tokens": totals["tokens"], "steps_s": totals["step_s"],
            "reference_s": timed["reference_s"]}


def _timed(fn, into: dict):
    """``fn`` wrapped so that the seconds spent in it are added to ``into['reference_s']``."""

    def wrapper(*a, **k):
        started = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            into["reference_s"] += time.perf_counter() - started

    return wrapper


def _trl_common(args: argparse.Namespace, folder: Path) -> tuple[Path, Any, list[dict], list[float], Any]:
    import torch
    from transformers import AutoTokenizer, TrainerCallback

    from rlaif.train.models import base_model_path

    torch.set_num_threads(args.threads)
    path = base_model_path(args.model, Path.home() / ".cache" / "rlaif")
    tokenizer = AutoTokenizer.from_pretrained(path)
    rows = [json.loads(line) for line in (folder / "pairs.jsonl").read_text().splitlines()]
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.started = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.started)

    return path, tokenizer, rows, times, StepTimer()


def _trl_args(args: argparse.Namespace, folder: Path) -> dict:
    """The TrainingArguments both TRL sides share: fp32, no checkpointing, no logging or saving."""
    return {"output_dir": str(folder / "trl"), "per_device_train_batch_size": args.batch, "num_train_epochs": 1,
            "learning_rate": 1e-6, "max_length": args.max_length, "bf16": False, "fp16": False,
            "gradient_checkpointing": False, "use_cpu": args.device == "cpu", "report_to": [],
            "save_strategy": "no", "logging_steps": 1000, "dataloader_num_workers": 0, "disable_tqdm": True,
            "seed": 0}


def run_trl(args: argparse.Namespace, folder: Path, precompute: bool = False) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    path, tokenizer, rows, times, timer = _trl_common(args, folder)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    timed = {"reference_s": 0.0}
    DPOTrainer._precompute_ref_logps = _timed(DPOTrainer._precompute_ref_logps, timed)
    config = DPOConfig(**_trl_args(args, folder), precompute_ref_log_probs=precompute,
                       precompute_ref_batch_size=2 * args.batch)
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=[timer])
    data = trainer.train_dataset
    tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in zip(data["prompt_ids"], data["chosen_ids"],
                                                                  data["rejected_ids"]))
    trainer.train()
    return {"side": "trl-pre" if precompute else "trl", "steps": len(times), "tokens": float(tokens),
            "steps_s": sum(times), "reference_s": timed["reference_s"]}


def run_trl_rm(args: argparse.Namespace, folder: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    path, tokenizer, rows, times, timer = _trl_common(args, folder)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    trainer = RewardTrainer(model=model, args=RewardConfig(**_trl_args(args, folder)),
                            train_dataset=Dataset.from_list(rows), processing_class=tokenizer, callbacks=[timer])
    data = trainer.train_dataset
    tokens = sum(len(c) + len(r) for c, r in zip(data["chosen_ids"], data["rejected_ids"]))
    trainer.train()
    return {"side": "trl-rm", "steps": len(times), "tokens": float(tokens), "steps_s": sum(times),
            "reference_s": 0.0}


SIDES = {"ours": lambda a, f: run_ours(a, f, "dpo"), "trl": run_trl,
         "trl-pre": lambda a, f: run_trl(a, f, precompute=True), "ours-rm": lambda a, f: run_ours(a, f, "rm"),
         "trl-rm": run_trl_rm}


def child(args: argparse.Namespace) -> None:
    result = SIDES[args.side](args, Path(args.work))
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(result), flush=True)


# --- the parent: data, every side, the report ----------------------------------------------------------------


def run_side(side: str, args: argparse.Namespace, folder: Path) -> dict:
    command = [sys.executable, __file__, "--side", side, "--work", str(folder), "--pairs", str(args.pairs),
               "--batch", str(args.batch), "--max-length", str(args.max_length), "--threads", str(args.threads),
               "--model", args.model, "--device", args.device]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    result = json.loads(line.removeprefix("RESULT "))
    print(f"{side}: done in {time.perf_counter() - started:.0f} s: {json.dumps(result)}", flush=True)
    return result


def _rates(r: dict) -> tuple[float, float]:
    """(tokens/s of the steps, tokens/s with the one-time pass counted)."""
    return r["tokens"] / r["steps_s"], r["tokens"] / (r["steps_s"] + r["reference_s"])


def _row(label: str, r: dict) -> str:
    loop, whole = _rates(r)
    ref = f"{r['reference_s']:.1f}" if r["reference_s"] else "-"
    return (f"| {label} | {r['steps']} | {r['tokens']:.0f} | {r['steps_s']:.1f} | {ref} | {loop:.1f} | {whole:.1f} "
            f"| {r['peak_rss_gib']:.2f} |")


def report(results: dict, args: argparse.Namespace, load_before: str, load_after: str) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=False).stdout.strip()
    ours, trl, pre = results["ours"], results["trl"], results["trl-pre"]
    ours_rm, trl_rm = results["ours-rm"], results["trl-rm"]
    o_loop, o_all = _rates(ours)
    p_loop, p_all = _rates(pre)
    t_loop, _ = _rates(trl)
    rm_loop, rm_all = _rates(ours_rm)
    trm_loop, _ = _rates(trl_rm)
    header = ("| side | steps | tokens | step time (s) | one-time pass (s) | tokens/s (steps) | tokens/s (all) | "
              "peak RSS (GiB) |\n|---|---|---|---|---|---|---|---|")
    lines = [
        f"Run {datetime.date.today()}, commit {commit}, {os.cpu_count()} CPUs, {args.threads} torch threads a side, "
        f"model {args.model}, {args.pairs} pairs, {args.batch} pairs a step, max_length {args.max_length}, fp32, "
        f"no gradient checkpointing, sides in the order {', '.join(results)}. `uptime` load before: {load_before}; "
        f"after: {load_after}.",
        "", header,
        _row("TRL DPOTrainer, `precompute_ref_log_probs=False` (reference in the loop)", trl),
        _row("TRL DPOTrainer, `precompute_ref_log_probs=True`", pre),
        _row("rlaif train dpo (reference pass once)", ours),
        _row("TRL RewardTrainer", trl_rm),
        _row("rlaif train rm (one-time pass: normalisation stats)", ours_rm),
        "",
        f"**DPO, like for like (both precompute the reference, pass counted): rlaif / TRL = {o_all / p_all:.2f}** "
        f"(training steps alone: {o_loop / p_loop:.2f}). Against TRL's default (reference in the loop): "
        f"{o_all / t_loop:.2f} with rlaif's pass counted, {o_loop / t_loop:.2f} on the steps. Target >= 1.25.",
        f"**Reward model: rlaif / TRL RewardTrainer = {rm_loop / trm_loop:.2f}** on the training steps; "
        f"{rm_all / trm_loop:.2f} with rlaif's normalisation pass counted (TRL computes no statistics).",
    ]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--random-model", choices=["0.5b"], default=None, help="GPU only: a random-init ~0.5B Llama")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--order", default="trl,trl-pre,ours,trl-rm,ours-rm",
                        help="the sides, comma-separated, in the order they run")
    parser.add_argument("--docs", type=Path, default=None, help="append the section to this markdown file")
    parser.add_argument("--side", choices=sorted(SIDES), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def random_llama_05b(folder: Path) -> str:
    """A random-init Llama of Qwen2.5-0.5B's shape (~0.49B parameters) on SmolLM2's tokenizer and template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlaif.train.models import base_model_path

    tokenizer = AutoTokenizer.from_pretrained(base_model_path("SmolLM2-135M-Instruct", Path.home() / ".cache/rlaif"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.side:
        return child(args)
    folder = Path(tempfile.mkdtemp(prefix="rlaif-train-bench-"))
    write_data(folder, args.pairs)
    if args.random_model:  # GPU path: our side only, bf16, MFU = 6 N tokens/s / peak (Kaplan et al. 2020)
        args.model, args.device = random_llama_05b(folder / "random-0.5b"), "cuda"
        ours = run_side("ours", args, folder)
        rate = ours["tokens"] / ours["steps_s"]
        mfu = f", MFU {6 * 0.49e9 * rate / (args.peak_tflops * 1e12):.3f}" if args.peak_tflops else ""
        print(f"random 0.5B, bf16: {rate:.0f} tokens/s{mfu}; peak RSS {ours['peak_rss_gib']:.2f} GiB")
        return None
    load_before = os.getloadavg()
    order = args.order.split(",")
    if sorted(order) != sorted(SIDES):
        raise SystemExit(f"--order must name each of {', '.join(sorted(SIDES))} once")
    results = {side: run_side(side, args, folder) for side in order}
    load_after = os.getloadavg()
    text = report(results, args, " ".join(f"{x:.2f}" for x in load_before),
                  " ".join(f"{x:.2f}" for x in load_after))
    print(text)
    if args.docs:
        with args.docs.open("a", encoding="utf-8") as handle:
            handle.write("\n" + text + "\n")
    print(f"work folder: {folder}")
    return None


if __name__ == "__main__":
    main()
