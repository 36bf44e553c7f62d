"""The GPU check's phases (run by ``bench/gpu_check.sh``): each one prints one JSON line of figures.

Phases, each the project's own code on the device it is given:
- ``sft``, ``rm``, ``dpo``: optimizer steps of the three trainers' tasks (``Recipe.make_examples`` and
  ``build_task`` of ``rlaif.train.sft`` / ``reward_model`` / ``dpo``) through the training loop's ``train_step``
  under an ``Accelerator`` (bf16 autocast on CUDA), on the embedded model (or its shape, see the script);
- ``grpo``: RL steps (``rlaif.train.rl_step``: rollouts from ``generate``, a rule reward, ``prepare`` and
  ``optimise``);
- ``fsdp``: the DPO steps again, started by ``accelerate launch`` with an FSDP2 config on one process;
- ``dpo-0.5b``: DPO steps on a random-init ~0.5B Llama: tokens/s and MFU = 6 N tokens/s / peak (Kaplan et al.
  2020's 6N training FLOPs per token; the reference log-probs are computed once before the steps, so they are
  not in the step FLOPs).

No database and no output folder beyond a temporary one: the check measures the training path, not the store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = ("safety matters because people trust careful answers that explain the risks and suggest a better way to "
         "reach the goal without harm while staying honest about what is known").split()


def text(seed: int, words: int) -> str:
    return " ".join(WORDS[(seed * 7 + j * 3) % len(WORDS)] for j in range(words)).capitalize() + "."


def rows(count: int, words: int) -> tuple[list[dict], list[dict]]:
    """SFT rows and preference pairs with deterministic answers of varied length (up to ``words`` words)."""
    sft, pairs = [], []
    for i in range(count):
        prompt = [{"role": "user", "content": f"Tell me about topic {i}: {text(i, 6)}"}]
        good, bad = text(i, 8 + (i * 37) % words), text(i + 1, 8 + (i * 53 + 17) % words)
        sft.append({"key": f"s{i}", "messages": [*prompt, {"role": "assistant", "content": good}]})
        pairs.append({"key": f"p{i}", "prompt_messages": prompt, "chosen": good, "rejected": bad,
                      "p_chosen": 0.7 + 0.2 * (i % 2)})
    return sft, pairs


def setup_for(model: Path, options, out: Path, accelerator):
    from rlaif.train.data import end_of_turn_strings
    from rlaif.train.models import end_of_turn_ids, load_tokenizer
    from rlaif.train.session import Setup

    tokenizer = load_tokenizer(model)
    precision = "bf16" if accelerator.device.type == "cuda" else "fp32"
    setup = Setup(accelerator, accelerator.device, precision, model, model.name, tokenizer, [], options, out,
                  log=lambda _: None)
    setup.end_of_turn = end_of_turn_strings(tokenizer, end_of_turn_ids(model, tokenizer))
    return setup


def trainer_phase(kind: str, model: Path, args: argparse.Namespace, out: Path) -> dict:
    """``args.steps`` optimizer steps of trainer ``kind``'s task; loss, tokens/s, peak memory."""
    import torch

    from rlaif.train import dpo, reward_model, sft
    from rlaif.train.loop import batch_plan, make_accelerator, make_optimizer, train_step
    from rlaif.train.models import select_device
    from rlaif.train.options import DpoOptions, RewardOptions, SftOptions

    device = select_device("cpu" if args.cpu else "cuda")
    accelerator = make_accelerator(device, "fp32" if args.cpu else "bf16")
    kinds = {"sft": (sft.SFT_RECIPE, SftOptions), "rm": (reward_model.RM_RECIPE, RewardOptions),
             "dpo": (dpo.DPO_RECIPE, DpoOptions)}
    recipe, option_type = kinds["dpo" if kind.startswith("dpo") or kind == "fsdp" else kind]
    options = option_type(batch_size=args.batch, micro_batch_size=args.micro, lr=1e-5, max_steps=args.steps,
                          max_length=args.max_length, save_every=0, eval_every=0, lr_schedule="constant")
    setup = setup_for(model, options, out, accelerator)
    sft_rows, pairs = rows(args.batch * args.steps, args.words)
    examples, _ = recipe.make_examples(sft_rows if recipe.kind == "sft" else pairs, setup)
    started = time.perf_counter()
    task = recipe.build_task(setup, examples, [])
    build_s = time.perf_counter() - started
    optimizer, scheduler = make_optimizer(task.model, options, args.steps)
    wrapped, optimizer = accelerator.prepare(task.model, optimizer)
    plan = batch_plan(task.lengths, options.batch_size, steps=args.steps, seed=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses, tokens, seconds = [], 0.0, 0.0
    for step in range(args.steps):
        values = train_step(task, wrapped, optimizer, plan[step], options, accelerator)
        scheduler.step()
        losses.append(values["loss"])
        if step:  # the first step warms kernels and allocators up
            tokens, seconds = tokens + values["tokens"], seconds + values["step_s"]
    distributed = str(accelerator.distributed_type).split(".")[-1]
    ok = all(v == v for v in losses)  # no NaN
    if kind == "fsdp" and not args.cpu:  # on CPU accelerate runs an FSDP config as plain multi-CPU DDP
        plugin = getattr(accelerator.state, "fsdp_plugin", None)
        ok = ok and distributed == "FSDP" and getattr(plugin, "fsdp_version", None) == 2
    out_values = {"phase": kind, "ok": ok, "loss_first": losses[0], "loss_last": losses[-1],
                  "tokens_per_s": tokens / seconds if seconds else None, "build_s": build_s,
                  "distributed": distributed,
                  "params": sum(p.numel() for p in task.model.parameters())}
    if device.type == "cuda":
        out_values["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out_values


def grpo_phase(model: Path, args: argparse.Namespace) -> dict:
    """GRPO steps: rollouts from ``generate``, a rule reward (ends with a period), one update each."""
    import torch

    from rlaif.train.models import end_of_turn_ids, load_causal_lm, load_tokenizer, select_device
    from rlaif.train.rl import disable_dropout
    from rlaif.train.rl_model import PolicyValue
    from rlaif.train.rl_step import UpdateConfig, optimise, prepare, step_metrics
    from rlaif.train.rollout import RolloutPrompt, sample_rollouts

    device = select_device("cpu" if args.cpu else "cuda")
    tokenizer = load_tokenizer(model)
    eos = end_of_turn_ids(model, tokenizer)
    policy = PolicyValue(load_causal_lm(model), value_head=False).to(device)
    disable_dropout(policy)
    frozen = torch.float32 if args.cpu else torch.bfloat16
    reference = load_causal_lm(model, dtype=frozen, trainable=False).to(device)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-5)
    cfg = UpdateConfig("grpo", 1.0, 1, 1, args.micro, 0.2, 0.2, 0.1, 1.0, 0.95, True, 1.0, 1.0)
    from rlaif.train.data import prompt_ids

    sft_rows, _ = rows(args.batch, args.words)
    prompts = [RolloutPrompt(r["key"], tuple(r["messages"][:1]), tuple(prompt_ids(tokenizer, r["messages"][:1])))
               for r in sft_rows[: max(1, args.batch // 4)]]
    autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast(device_type="cpu", enabled=False))
    figures: list[dict] = []
    for step in range(args.steps):
        with autocast:
            rollouts = sample_rollouts(policy.lm, tokenizer, prompts, k=4, max_new_tokens=args.new_tokens,
                                       temperature=1.0, eos_ids=eos, seed=step, batch_size=args.batch)
            scores = [1.0 if t.rstrip().endswith(".") else 0.0 for t in rollouts.texts]
            started = time.perf_counter()
            prep = prepare(policy, reference, rollouts, scores, cfg, 0.04, tokenizer.pad_token_id, device)
            update = optimise(policy, optimizer, prep, cfg, 0.04, torch.Generator().manual_seed(step))
        values = step_metrics(prep, rollouts, update, 0.04)
        values.update(update_s=time.perf_counter() - started)
        figures.append(values)
    last = figures[-1]
    return {"phase": "grpo", "ok": all(f["policy_loss"] == f["policy_loss"] for f in figures),
            "policy_loss_last": last["policy_loss"], "kl_last": last["kl"],
            "rollout_tokens_per_s": last["rollout_tokens"] / max(last["rollout_s"], 1e-9),
            "update_s": last["update_s"]}


def random_llama(tokenizer_from: Path, out: Path, *, tiny: bool) -> Path:
    """A random-init Llama of Qwen2.5-0.5B's shape (~0.49B parameters; tiny: 2 layers of 64) on a tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    shape = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1) if tiny else
             dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2))
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **shape)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["sft", "rm", "dpo", "grpo", "fsdp", "dpo-0.5b"])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (what the test runs)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--words", type=int, default=120)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    args = parser.parse_args()
    if args.cpu:
        args.steps, args.batch, args.micro, args.words, args.max_length, args.new_tokens = 2, 4, 2, 12, 128, 8
    out = Path(tempfile.mkdtemp(prefix=f"gpu-check-{args.phase}-"))
    model = args.model
    if args.phase == "dpo-0.5b":
        model = random_llama(args.model, out / "llama-0.5b", tiny=args.cpu)
    result = grpo_phase(model, args) if args.phase == "grpo" else trainer_phase(args.phase, model, args, out)
    if args.phase == "dpo-0.5b" and result.get("tokens_per_s"):
        result["mfu"] = 6 * result["params"] * result["tokens_per_s"] / (args.peak_tflops * 1e12)
        result["peak_tflops"] = args.peak_tflops
    if args.phase == "fsdp" and int(os.environ.get("RANK", "0")) != 0:
        return
    print("GPU-CHECK " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
