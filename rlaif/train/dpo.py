"""The DPO family on ``preference_dataset``: DPO, cDPO with per-row soft labels, IPO, length-normalised DPO, SimPO.

Kept from the papers: DPO's objective on the log-ratio of policy to reference (Rafailov et al. 2023, arXiv
2305.18290, eq. 7), with the reference the model training starts from; IPO's squared loss (Azar et al. 2023, arXiv
2310.12036, eq. 17); SimPO's reference-free, length-normalised reward with a target margin (Meng et al. 2024,
arXiv 2405.14734, eq. 6). The equations live in ``rlaif.train.losses``, one small function each.

Changed, and why:
- **The reference is never in the training loop.** It is frozen, so its log-probs of every pair are computed
  once, before the first step, in one batched pass without gradients (sorted by length, so with little padding),
  and cached in the run's folder (``reference_logps.json``, keyed by the data version, base model and length
  limit) so a resumed run does not repeat it. Training then runs one model, not two: no second copy in memory,
  and a forward pass a step saved. SimPO needs no reference and skips the pass.
- **cDPO takes its label noise per row** from the judge's ``p_chosen`` instead of one global epsilon (Mitchell
  2023): the AI judge says how sure it is about each pair, and TRL's DPOTrainer cannot take that.
- **IPO on sequence log-probs**, as its equation is written (TRL averages per token for IPO).
- Chosen and rejected answers run in one forward pass, padded together to the longest of the micro-batch.

Logged per step: the loss; the implicit rewards of chosen and rejected answers, their margin and the reward
accuracy (how often chosen out-rewards rejected); the policy's chosen and rejected log-probs and their margin.
Before training and at the end, the same over the held-out pairs (phase ``eval``) and over up to
``EVAL_TRAIN_ROWS`` training pairs (phase ``train``), so the rise of the chosen-over-rejected margin on the
training pairs and its held-out counterpart are rows in ``train_metrics``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlaif.engines.base import content_hash
from rlaif.train.data import PairExample, chunks, pair_batch, pair_examples, rank_rows, read_preference_rows
from rlaif.train.logprobs import TokenLogps, sequence_logps
from rlaif.train.loop import EVAL_TRAIN_ROWS, Task
from rlaif.train.losses import PAIR_LOSSES, PairLogps, implicit_rewards
from rlaif.train.models import load_causal_lm
from rlaif.train.session import Recipe, Setup, save_policy

REFERENCE_FILE = "reference_logps.json"


def make_pair_examples(rows: Sequence[dict], setup: Setup) -> tuple[list[PairExample], int]:
    return pair_examples(rows, setup.tokenizer, end_of_turn=setup.end_of_turn, max_length=setup.options.max_length)


def pair_logps(model: Any, pairs: Sequence[PairExample], setup: Setup,
               reference: dict[str, tuple[float, float]] | None) -> tuple[PairLogps, float]:
    """Policy (and cached reference) log-probs of a micro-batch of pairs; returns them and the tokens run."""
    ids, attention, mask = (t.to(setup.device) for t in pair_batch(pairs, setup.tokenizer.pad_token_id))
    sums, counts = sequence_logps(model, ids, attention, mask)
    b = len(pairs)
    x = PairLogps(chosen=sums[:b], rejected=sums[b:], chosen_tokens=counts[:b], rejected_tokens=counts[b:],
                  p_chosen=torch.tensor([p.p_chosen for p in pairs], device=setup.device))
    if reference is not None:
        ref = torch.tensor([reference[p.key] for p in pairs], dtype=torch.float32, device=setup.device)
        x.ref_chosen, x.ref_rejected = ref[:, 0], ref[:, 1]
    return x, float(attention.sum())


def pair_stats(x: PairLogps, losses: torch.Tensor, loss: str, beta: float) -> dict[str, float]:
    """Summed statistics of a micro-batch (the loop divides them by the global batch's pair count)."""
    chosen, rejected = implicit_rewards(x, loss, beta)
    with torch.no_grad():
        return {
            "loss": float(losses.sum()),
            "reward_chosen": float(chosen.sum()), "reward_rejected": float(rejected.sum()),
            "reward_margin": float((chosen - rejected).sum()),
            "reward_accuracy": float((chosen > rejected).float().sum()),
            "logp_chosen": float(x.chosen.sum()), "logp_rejected": float(x.rejected.sum()),
            "logp_margin": float((x.chosen - x.rejected).sum()),
        }


def build_dpo_task(setup: Setup, train: list[PairExample], evals: list[PairExample]) -> Task:
    options = setup.options
    lm = load_causal_lm(setup.base_path, lora=options.lora, gradient_checkpointing=options.gradient_checkpointing)
    model = TokenLogps(lm).to(setup.device)
    spec, beta = PAIR_LOSSES[options.loss], options.effective_beta
    reference = reference_logps(model, [*train, *evals], setup) if spec.uses_reference else None

    def loss(module: Any, pairs: list[PairExample]) -> tuple[torch.Tensor, dict[str, float]]:
        x, tokens = pair_logps(module, pairs, setup, reference)
        losses = spec.compute(x, beta, options.gamma)
        return losses.sum(), {**pair_stats(x, losses, options.loss, beta), "tokens": tokens}

    phases = {"eval": evals, "train": sorted(train, key=lambda p: p.key)[:EVAL_TRAIN_ROWS]}

    def evaluate(module: Any, rank: int, world: int, step: int) -> dict[str, dict[str, float]]:
        out = {}
        for phase, pairs in phases.items():
            if not pairs:
                continue
            sums = {"count": 0.0}
            for group in chunks(rank_rows(range(len(pairs)), rank, world), options.ref_batch_size):
                batch = [pairs[i] for i in group]
                if step == 0 and reference is not None:  # the policy is the reference: its log-probs are cached
                    x = _cached_pair_logps(batch, reference, setup)
                else:
                    x, _ = pair_logps(module, batch, setup, reference)
                for name, value in pair_stats(x, spec.compute(x, beta, options.gamma), options.loss, beta).items():
                    sums[name] = sums.get(name, 0.0) + value
                sums["count"] += len(batch)
            out[phase] = _complete(sums)
        return out

    return Task(model=model, examples=train, lengths=[p.length for p in train], loss=loss,
                weight=lambda pairs: len(pairs), evaluate=evaluate, summarise=_per_pair)


def _complete(sums: dict[str, float]) -> dict[str, float]:
    """Every statistic name present (an empty share still sends zeros, so all processes reduce the same names)."""
    names = ("loss", "reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy", "logp_chosen",
             "logp_rejected", "logp_margin", "count")
    return {name: sums.get(name, 0.0) for name in names}


def _per_pair(phase: str, sums: dict[str, float]) -> dict[str, float]:
    count = max(sums.get("count", 0.0), 1.0)
    return {**{k: v / count for k, v in sums.items() if k != "count"}, "pairs": sums.get("count", 0.0)}


def _cached_pair_logps(pairs: Sequence[PairExample], reference: dict[str, tuple[float, float]],
                       setup: Setup) -> PairLogps:
    ref = torch.tensor([reference[p.key] for p in pairs], dtype=torch.float32, device=setup.device)
    lengths = torch.tensor([[len(p.chosen), len(p.rejected)] for p in pairs], dtype=torch.float32,
                           device=setup.device)
    return PairLogps(chosen=ref[:, 0], rejected=ref[:, 1], chosen_tokens=lengths[:, 0], rejected_tokens=lengths[:, 1],
                     p_chosen=torch.tensor([p.p_chosen for p in pairs], device=setup.device),
                     ref_chosen=ref[:, 0], ref_rejected=ref[:, 1])


def reference_cache_key(setup: Setup, pairs: Sequence[PairExample]) -> str:
    return content_hash("reference-logps", sorted(p.key for p in pairs), str(setup.base_path),
                        setup.options.max_length, setup.precision)


def reference_logps(model: Any, pairs: Sequence[PairExample], setup: Setup) -> dict[str, tuple[float, float]]:
    """log pi_ref(chosen) and log pi_ref(rejected) of every pair, from the untrained model, computed once.

    Each process scores its share of the pairs (sorted by length, so batches are nearly unpadded) and the shares
    are gathered; the main process caches the result in the run's folder for a resumed run.
    """
    from accelerate.utils import gather_object

    key = reference_cache_key(setup, pairs)
    path = setup.out_dir / REFERENCE_FILE
    cached = _read_cache(path, key)
    if cached is not None and all(p.key in cached for p in pairs):
        return cached
    order = sorted(range(len(pairs)), key=lambda i: -pairs[i].length)
    mine = [pairs[i] for i in rank_rows(order, setup.accelerator.process_index, setup.accelerator.num_processes)]
    found: list[tuple[str, float, float]] = []
    model.eval()
    with torch.inference_mode(), setup.accelerator.autocast():
        for group in chunks(range(len(mine)), setup.options.ref_batch_size):
            batch = [mine[i] for i in group]
            x, _ = pair_logps(model, batch, setup, None)
            found += [(p.key, float(c), float(r)) for p, c, r in zip(batch, x.chosen.tolist(), x.rejected.tolist())]
    model.train()
    if setup.accelerator.num_processes > 1:
        found = gather_object(found)
    result = {k: (c, r) for k, c, r in found}
    if setup.accelerator.is_main_process:
        setup.out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"key": key, "logps": result}), encoding="utf-8")
    setup.log(f"reference log-probs of {len(result)} pairs computed once and cached in {path}")
    return result


def _read_cache(path: Path, key: str) -> dict[str, tuple[float, float]] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("key") != key:
        return None
    return {k: (v[0], v[1]) for k, v in data["logps"].items()}


DPO_RECIPE = Recipe(kind="dpo", dataset="preference_dataset", read_rows=read_preference_rows,
                    make_examples=make_pair_examples, build_task=build_dpo_task, save=save_policy)


def train_dpo(store: Any, *, options: Any, base_model: str, base_path: Path, out_dir: Path, **kwargs: Any) -> Any:
    """Train the DPO family on ``store``'s ``preference_dataset``; see ``rlaif.train.session.run_training``."""
    from rlaif.train.session import run_training

    return run_training(DPO_RECIPE, store, options=options, base_model=base_model, base_path=base_path,
                        out_dir=out_dir, **kwargs)
