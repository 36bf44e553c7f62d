"""The reward (preference) model: a scalar head on a causal LM, trained on ``preference_dataset``.

Kept from the papers: the preference model of Bai et al. 2022 (section 4) and Ouyang et al. 2022 (eq. 1), a
language model whose last token's hidden state is projected to one number, trained so that
P(chosen > rejected) = sigmoid(r_c - r_r) (Bradley-Terry).

Changed, and why:
- **Soft labels.** The AI judge gives a probability per pair (``p_chosen``), not a hard choice, so the loss is the
  cross-entropy to that probability (``losses.bradley_terry_loss``), as Bai et al. train on soft AI labels.
- **Normalised rewards.** A raw reward has an arbitrary offset and scale. After training, the rewards of the
  reference set's answers (the distinct chosen and rejected answers of the ``norm_split`` pairs, at most
  ``REFERENCE_MAX`` of them) define mean 0 and std 1; the statistics are saved with the model
  (``reward_model.json``) and every score it gives afterwards (``rlaif score``, RL rewards) is normalised.
- **Calibration is measured.** Besides accuracy against the judge's choice, the held-out pass reports the Brier
  score of sigmoid(r_c - r_r) against ``p_chosen`` and the expected calibration error over ``ECE_BINS`` equal-width
  bins. Each pair counts in both orientations (p and 1 - p), so the bins span [0, 1] instead of only [0.5, 1].
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlaif.train.data import PairExample, chunks, pad_right, pair_examples, rank_rows, read_preference_rows
from rlaif.train.loop import Task
from rlaif.train.losses import bradley_terry_loss
from rlaif.train.models import new_reward_model, save_reward_model
from rlaif.train.session import Recipe, Setup

ECE_BINS = 10
REFERENCE_MAX = 4096  # answers in the normalisation set (a key-ordered subset beyond that)
SCORE_BATCH = 16


def make_examples(rows: Sequence[dict], setup: Setup) -> tuple[list[PairExample], int]:
    return pair_examples(rows, setup.tokenizer, end_of_turn=setup.end_of_turn, max_length=setup.options.max_length)


def pair_rewards(model: Any, pairs: Sequence[PairExample], setup: Setup) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(rewards of the chosen answers, of the rejected ones, tokens run), both scored in one forward pass."""
    seqs = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    ids, attention = pad_right(seqs, setup.tokenizer.pad_token_id)
    rewards = model(ids.to(setup.device), attention.to(setup.device))
    return rewards[: len(pairs)], rewards[len(pairs) :], float(attention.sum())


def calibration_sums(pred: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
    """Summed Brier terms and per-bin counts/predictions/labels, both orientations of each pair."""
    pred, label = torch.cat([pred, 1 - pred]), torch.cat([label, 1 - label])
    sums = {"brier": float(((pred - label) ** 2).sum()), "oriented": float(len(pred))}
    bins = (pred * ECE_BINS).long().clamp(max=ECE_BINS - 1)
    for b in range(ECE_BINS):
        inside = bins == b
        sums[f"bin{b}_n"] = float(inside.sum())
        sums[f"bin{b}_pred"] = float(pred[inside].sum())
        sums[f"bin{b}_label"] = float(label[inside].sum())
    return sums


def calibration(sums: dict[str, float]) -> dict[str, float]:
    """Brier score and ECE = sum_b |sum pred_b - sum label_b| / N from ``calibration_sums`` totals."""
    n = max(sums["oriented"], 1.0)
    ece = sum(abs(sums[f"bin{b}_pred"] - sums[f"bin{b}_label"]) for b in range(ECE_BINS)) / n
    return {"brier": sums["brier"] / n, "ece": ece}


def build_rm_task(setup: Setup, train: list[PairExample], evals: list[PairExample]) -> Task:
    options = setup.options
    model = new_reward_model(setup.base_path, lora=options.lora,
                             gradient_checkpointing=options.gradient_checkpointing).to(setup.device)
    reference = _reference_answers(train if options.norm_split == "train" else evals or train)

    def loss(module: Any, pairs: list[PairExample]) -> tuple[torch.Tensor, dict[str, float]]:
        chosen, rejected, tokens = pair_rewards(module, pairs, setup)
        p = torch.tensor([x.p_chosen for x in pairs], device=setup.device)
        losses = bradley_terry_loss(chosen, rejected, p)
        with torch.no_grad():
            stats = {"loss": float(losses.sum()), "accuracy": float((chosen > rejected).float().sum()),
                     "reward_margin": float((chosen - rejected).sum()), "tokens": tokens}
        return losses.sum(), stats

    def evaluate(module: Any, rank: int, world: int, step: int) -> dict[str, dict[str, float]]:
        out = {"eval": _eval_sums(module, evals, rank, world, setup)} if evals else {}
        if step == setup.total_steps:  # the end: the statistics the saved model normalises with
            out["reference"] = _reference_sums(module, reference, rank, world, setup)
        return out

    def summarise(phase: str, sums: dict[str, float]) -> dict[str, float]:
        if phase == "reference":
            n = max(sums["n"], 1.0)
            mean = sums["sum"] / n
            std = math.sqrt(max(sums["sq"] / n - mean**2, 0.0)) or 1.0
            model.set_stats(mean, std)  # every process holds the same module; the main one saves it
            return {"reward_mean": mean, "reward_std": std, "answers": sums["n"]}
        n = max(sums["count"], 1.0)
        return {"loss": sums["loss"] / n, "accuracy": sums["accuracy"] / n, **calibration(sums), "pairs": sums["count"]}

    return Task(model=model, examples=train, lengths=[p.length for p in train], loss=loss,
                weight=lambda pairs: len(pairs), evaluate=evaluate, summarise=summarise)


def _eval_sums(module: Any, pairs: list[PairExample], rank: int, world: int, setup: Setup) -> dict[str, float]:
    sums = {"loss": 0.0, "accuracy": 0.0, "count": 0.0, **calibration_sums(torch.zeros(0), torch.zeros(0))}
    for group in chunks(rank_rows(range(len(pairs)), rank, world), setup.options.micro_batch_size):
        batch = [pairs[i] for i in group]
        chosen, rejected, _ = pair_rewards(module, batch, setup)
        p = torch.tensor([x.p_chosen for x in batch], device=chosen.device)
        sums["loss"] += float(bradley_terry_loss(chosen, rejected, p).sum())
        sums["accuracy"] += float((chosen > rejected).float().sum())
        sums["count"] += len(batch)
        for name, value in calibration_sums(torch.sigmoid(chosen - rejected).cpu(), p.cpu()).items():
            sums[name] += value
    return sums


def _reference_answers(pairs: list[PairExample]) -> list[list[int]]:
    """The distinct (prompt + answer) sequences of the reference pairs, key-ordered, at most ``REFERENCE_MAX``."""
    seen: dict[tuple[int, ...], None] = {}
    for p in sorted(pairs, key=lambda x: x.key):
        seen.setdefault(tuple(p.prompt + p.chosen), None)
        seen.setdefault(tuple(p.prompt + p.rejected), None)
    return [list(s) for s in list(seen)[:REFERENCE_MAX]]


def _reference_sums(module: Any, seqs: list[list[int]], rank: int, world: int, setup: Setup) -> dict[str, float]:
    sums = {"sum": 0.0, "sq": 0.0, "n": 0.0}
    for group in chunks(rank_rows(range(len(seqs)), rank, world), SCORE_BATCH):
        ids, attention = pad_right([seqs[i] for i in group], setup.tokenizer.pad_token_id)
        raw = module(ids.to(setup.device), attention.to(setup.device)).double()
        sums["sum"] += float(raw.sum())
        sums["sq"] += float((raw**2).sum())
        sums["n"] += len(group)
    return sums


def save_rm(setup: Setup, module: Any, folder: Path, meta: dict, state: dict | None) -> Path:
    from rlaif.train.models import end_of_turn_ids

    meta = {**meta, "reference": f"{setup.options.norm_split} split of preference_dataset", "pooling": "last token"}
    return save_reward_model(module, setup.tokenizer, folder, meta=meta,
                             end_of_turn=end_of_turn_ids(setup.base_path, setup.tokenizer))


RM_RECIPE = Recipe(kind="rm", dataset="preference_dataset", read_rows=read_preference_rows,
                   make_examples=make_examples, build_task=build_rm_task, save=save_rm)


def train_reward_model(store: Any, *, options: Any, base_model: str, base_path: Path, out_dir: Path,
                       **kwargs: Any) -> Any:
    """Train a reward model on ``store``'s ``preference_dataset``; see ``rlaif.train.session.run_training``."""
    from rlaif.train.session import run_training

    return run_training(RM_RECIPE, store, options=options, base_model=base_model, base_path=base_path,
                        out_dir=out_dir, **kwargs)


def reward_model_id(path: Path) -> str:
    """A saved reward model's identity in ``reward_scores``: the run that trained it and its step."""
    meta = json.loads((Path(path) / "reward_model.json").read_text(encoding="utf-8"))
    return f"{meta.get('run_id', Path(path).name)}@{meta.get('step', 0)}"


# --- scoring stored responses ----------------------------------------------------------------------------------

SCORE_QUERY = """
SELECT g.key, g.prompt_id, g.stage, g.output, p.messages
FROM generations g JOIN prompts p USING (prompt_id)
WHERE g.kind = 'chat' AND g.output IS NOT NULL AND length(trim(g.output)) > 0 AND g.stage IN (SELECT unnest(?))
  AND g.key NOT IN (SELECT key FROM reward_scores WHERE reward_model = ?)
ORDER BY g.key
"""


class RewardScorer:
    """A saved reward model ready to score (conversation, answer) pairs: what ``rlaif score`` and RL use.

    Answers are tokenized exactly as in training (``data.completion_ids``: the chat template as at generation,
    the end-of-turn token included) and cut at the reward model's own ``max_length``.
    """

    def __init__(self, path: Path, *, device: str = "auto"):
        from rlaif.train.data import end_of_turn_strings
        from rlaif.train.models import end_of_turn_ids, load_reward_model, load_tokenizer, select_device

        self.path = Path(path)
        self.device = select_device(device)
        self.model = load_reward_model(self.path, device=self.device)
        self.tokenizer = load_tokenizer(self.path)
        self.end_of_turn = end_of_turn_strings(self.tokenizer, end_of_turn_ids(self.path, self.tokenizer))
        self.max_length = int(self.model.meta.get("options", {}).get("max_length", 1024))
        self.identity = reward_model_id(self.path)

    def score(self, conversations: Sequence[Sequence[dict]], answers: Sequence[str]) -> tuple[list[float], list[float]]:
        """(normalised, raw) rewards of each answer to its conversation."""
        from rlaif.train.data import completion_ids, prompt_ids

        seqs = []
        for messages, answer in zip(conversations, answers, strict=True):
            seq = prompt_ids(self.tokenizer, messages) + completion_ids(self.tokenizer, messages, answer,
                                                                        end_of_turn=self.end_of_turn)
            seqs.append(seq[-self.max_length:])  # keep the end: the reward is read at the answer's last token
        raw: list[float] = []
        with torch.inference_mode():
            for group in chunks(range(len(seqs)), SCORE_BATCH):
                ids, attention = pad_right([seqs[i] for i in group], self.tokenizer.pad_token_id)
                raw += self.model(ids.to(self.device), attention.to(self.device)).tolist()
        normalised = self.model.normalise(torch.tensor(raw, device=self.device)).tolist() if raw else []
        return normalised, raw


def score_responses(store: Any, model_path: Path, *, stages: Sequence[str] = ("respond", "revise"),
                    device: str = "auto", log: Any = print) -> int:
    """Add the reward model's scores of stored responses (``generations`` of ``stages``) to ``reward_scores``.

    Responses this reward model has already scored are skipped, so a rerun adds only new ones. Returns the
    number of rows added.
    """
    from rlaif.store import Writer, utcnow

    scorer = RewardScorer(model_path, device=device)
    store.migrate()
    rows = store.fetch(SCORE_QUERY, [list(stages), scorer.identity])
    if not rows:
        log(f"nothing to score: every {'/'.join(stages)} response is scored by {scorer.identity} already")
        return 0
    added = 0
    with Writer(store, max_rows=512, max_age_s=10.0) as writer:
        for group in chunks(range(len(rows)), 256):
            batch = [rows[i] for i in group]
            normalised, raw = scorer.score([r["messages"] for r in batch], [r["output"] for r in batch])
            for row, reward, value in zip(batch, normalised, raw):
                writer.add("reward_scores", {"reward_model": scorer.identity, "key": row["key"],
                                             "prompt_id": row["prompt_id"], "stage": row["stage"], "reward": reward,
                                             "reward_raw": value, "model_path": str(scorer.path.resolve()),
                                             "created_at": utcnow()})
                added += 1
    log(f"scored {added} responses with {scorer.identity}")
    return added
