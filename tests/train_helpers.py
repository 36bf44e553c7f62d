"""Helpers for the training tests: a real DuckDB file with SFT and preference rows crafted through the store.

The rows are the tables' own rows (prompts, revisions, comparisons), so the dataset views the trainers read are
the real ones. Texts use the tiny model's word list so its tokenizer encodes them in few tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlaif.prompts import make_prompt
from rlaif.store import Store, utcnow

WORDS = ("the cat and the dog went to the river to see a red bird in the old tree by the small house "
         "then they come home to read a book about the blue sea").split()


def _text(start: int, size: int) -> str:
    return " ".join(WORDS[(start + j) % len(WORDS)] for j in range(size))


def crafted_store(path: Path, pairs: int = 24, *, sft: bool = True) -> Store:
    """A migrated store with ``pairs`` prompts, each with one revision chain and one judged pair.

    The chosen answer (the revision) is a run of the word list, the rejected one (the original) the same words
    reversed; p_chosen alternates between 0.9 and 0.7 so the soft labels differ per row.
    """
    store = Store(path)
    store.migrate()
    prompts, revisions, comparisons = [], [], []
    for i in range(pairs):
        prompt = make_prompt(f"tell me about the {WORDS[i % len(WORDS)]} number {i}")
        good, bad = _text(i, 4 + i % 6), " ".join(reversed(_text(i + 3, 3 + i % 4).split()))
        prompts.append(prompt.as_row())
        if sft:
            revisions.append({
                "chain_id": f"chain{i:03d}", "round": 1, "run_id": "gen", "prompt_id": prompt.prompt_id,
                "principle_id": "harm", "original": bad, "before": bad, "critique": "it is bad", "revision": good,
                "constitution_name": "harmless", "constitution_version": "v1", "model": "m", "created_at": utcnow(),
            })
        comparisons.append({
            "comparison_id": f"cmp{i:03d}", "pair_id": f"pair{i:03d}", "run_id": "gen", "prompt_id": prompt.prompt_id,
            "principle_id": "harm", "response_a": good, "response_b": bad, "p_a": 0.9 if i % 2 else 0.7,
            "consistent": True, "method": "logprobs", "judge_model": "judge", "constitution_name": "harmless",
            "constitution_version": "v1", "created_at": utcnow(),
        })
    store.write({"prompts": prompts, "revisions": revisions, "comparisons": comparisons})
    return store


def metric(store: Store, run_id: str, name: str, phase: str = "step") -> list[float]:
    rows = store.fetch("SELECT value FROM train_metrics WHERE run_id = ? AND phase = ? AND name = ? ORDER BY step",
                       [run_id, phase, name])
    return [r["value"] for r in rows]


def eval_prompts_file(path: Path, count: int = 3) -> Path:
    """A JSONL prompt file with ``count`` prompts of the eval split and as many of the train split."""
    rows, evals, trains = [], 0, 0
    for i in range(400):
        prompt = make_prompt(f"tell me about the red bird number {i}")
        if prompt.split == "eval" and evals < count:
            evals += 1
        elif prompt.split == "train" and trains < count:
            trains += 1
        else:
            continue
        rows.append(json.dumps({"prompt": prompt.text}))
    path.write_text("\n".join(rows) + "\n")
    return path
