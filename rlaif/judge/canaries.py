"""Canary pairs: pairs with a known answer, judged at the start of every run and once per ``every`` pairs.

A judge that has gone wrong (a template edit that breaks the letter read-out, an engine answering garbage, a
model swapped for a base model) still produces numbers; canaries make that visible in SQL::

    SELECT run_id, avg(correct::INT) AS canary_accuracy, count(*) FROM canary_results GROUP BY run_id

The pairs live in ``rlaif/data/judge_canaries.jsonl`` (``id``, ``prompt``, ``chosen``, ``rejected``; edit it or
pass another file). The prefs flow asks ``canaries_due`` after each batch of pairs and judges that many, picking
them with ``canary_for`` so that a run's canaries rotate through the file in a seeded order. Canary verdicts go
to ``canary_results``, never to ``comparisons``: they are checks, not training data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rlaif.constitution import Constitution
from rlaif.engines.base import Engine, content_hash
from rlaif.errors import ConfigError
from rlaif.judge.config import JudgeConfig
from rlaif.judge.defences import Guard
from rlaif.judge.pairing import Pair
from rlaif.judge.pairs_file import read_pair_file
from rlaif.judge.rows import verdict_columns
from rlaif.judge.verdict import Judgement
from rlaif.resources import package_file

CANARY_EVERY = 250  # pairs between two canary checks (after the first, at the start of a run)


@dataclass(frozen=True)
class Canary:
    id: str
    pair: Pair
    a_is_better: bool  # whether the pair's canonical a is the known-better response


def canaries_path() -> Path:
    return package_file("data", "judge_canaries.jsonl")


def load_canaries(path: str | Path | None = None) -> list[Canary]:
    """The canary pairs of a ``chosen``/``rejected`` file with an ``id`` column (the shipped file by default)."""
    path = Path(path) if path is not None else canaries_path()
    ids = [json.loads(line).get("id") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    canaries = []
    for labelled, canary_id in zip(read_pair_file(path, require_label=True), ids):
        if not isinstance(canary_id, str) or not canary_id:
            raise ConfigError(f"{path}:{labelled.row}: column 'id': expected a name for the canary, got {canary_id!r}")
        canaries.append(Canary(canary_id, labelled.pair, bool(labelled.a_is_better)))
    if not canaries:
        raise ConfigError(f"{path}: expected at least one canary pair, got none")
    return canaries


def canaries_due(pairs_judged: int, canaries_judged: int, every: int = CANARY_EVERY) -> int:
    """How many canary checks are due now: one at the start of a run, then one per ``every`` pairs judged."""
    if every < 1:
        raise ConfigError(f"canary interval must be at least 1 pair, got {every}")
    return max(0, 1 + pairs_judged // every - canaries_judged)


def canary_for(canaries: list[Canary], seq: int, run_seed: int) -> Canary:
    """The run's ``seq``-th canary: the file in a seeded rotation, so reruns check the same ones in order."""
    offset = int(content_hash("canary", run_seed)[:8], 16)
    return canaries[(offset + seq) % len(canaries)]


async def judge_canary(engine: Engine, constitution: Constitution, canary: Canary, *, config: JudgeConfig,
                       run_seed: int = 0, guard: Guard | None = None) -> Judgement:
    """Judge a canary like any pair (same mode, same ensemble draw)."""
    from rlaif.stages.judge import judge

    return await judge(engine, constitution, canary.pair, config=config, run_seed=run_seed, guard=guard)


def canary_rows(canary: Canary, judgement: Judgement, *, run_id: str, seq: int, constitution: Constitution,
                judge_engine: str, judge_model: str) -> list[dict]:
    """Input: a judged canary. Output: its ``canary_results`` rows, one per principle (failures left out)."""
    from rlaif.store import utcnow

    rows = []
    for v in judgement.verdicts:
        if v.status == "failed":
            continue
        p = v.p_a if canary.a_is_better or v.p_a is None else 1.0 - v.p_a
        vote = v.vote_a if canary.a_is_better or v.vote_a is None else 1.0 - v.vote_a
        decision = p if p is not None else vote
        rows.append({
            "canary_result_id": content_hash("canary-result", run_id, seq, v.principle_id, v.mode),
            "run_id": run_id, "seq": seq, "canary_id": canary.id, "pair_id": canary.pair.pair_id,
            "p_correct": p, "vote_correct": vote, "correct": None if decision is None else decision > 0.5,
            "judge_engine": judge_engine, "judge_model": judge_model,
            "constitution_version": constitution.version, "created_at": utcnow(), **verdict_columns(v),
        })
    return rows
