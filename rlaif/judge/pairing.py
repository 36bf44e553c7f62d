"""Pairs to judge: their identity, all-vs-all pairing of sampled candidates, and SL-CAI (original, revision) pairs.

A pair's identity does not depend on the order its two responses arrive in: ``Pair.make`` puts them in a
canonical order (by text) and ``pair_id`` hashes that order. Everything derived from the identity, the
principles drawn for it included, is the same whichever way round a caller gives the pair, and the comparisons
table stores every verdict in the canonical order (``Pair.swapped`` says whether the caller's order was the
other one).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rlaif.engines.base import Message, content_hash


def pair_id(prompt_id: str, response_a: str, response_b: str) -> str:
    """The id of a pair of responses to one prompt; the same for (a, b) and (b, a)."""
    first, second = sorted((response_a, response_b))
    return content_hash("pair", prompt_id, first, second)


@dataclass(frozen=True)
class Candidate:
    """One response to judge, with where it came from (lineage columns of the comparisons table)."""

    text: str
    source: str = ""  # e.g. 'sample:2', 'original', 'revision', 'user'
    model: str | None = None  # the policy model that wrote it, when known
    key: str | None = None  # the generations row that produced it, when there is one


@dataclass(frozen=True)
class Pair:
    """Two candidates for one conversation, ``a`` and ``b`` in canonical order."""

    prompt_id: str
    messages: tuple[Message, ...]
    a: Candidate
    b: Candidate
    chain_id: str | None = None
    swapped: bool = False  # the caller gave (b, a)

    @classmethod
    def make(cls, prompt_id: str, messages: Sequence[Message], x: Candidate, y: Candidate,
             chain_id: str | None = None) -> Pair:
        """The pair of ``x`` and ``y`` in canonical order; ``swapped`` when that is (y, x)."""
        swapped = y.text < x.text
        a, b = (y, x) if swapped else (x, y)
        return cls(prompt_id, tuple({"role": m["role"], "content": m["content"]} for m in messages), a, b,
                   chain_id, swapped)

    @property
    def pair_id(self) -> str:
        return pair_id(self.prompt_id, self.a.text, self.b.text)

    @property
    def policy_model(self) -> str | None:
        """The model behind both candidates when they share one (else their two names, a/b order)."""
        models = [m for m in (self.a.model, self.b.model) if m]
        return None if not models else models[0] if len(set(models)) == 1 else " / ".join(models)


def all_pairs(k: int, max_pairs: int | None = None, *, seed: int = 0, salt: str = "") -> list[tuple[int, int]]:
    """Index pairs (i, j), i < j, of ``k`` candidates: all of them, or ``max_pairs`` drawn by a seeded choice.

    The draw depends on ``seed`` and ``salt`` (say, the prompt id) only, so a rerun draws the same pairs.
    """
    pairs = list(itertools.combinations(range(k), 2))
    if max_pairs is None or len(pairs) <= max_pairs:
        return pairs
    rng = random.Random(content_hash("pairs", seed, salt, k, max_pairs))
    return sorted(rng.sample(pairs, max_pairs))


def candidate_pairs(prompt_id: str, messages: Sequence[Message], candidates: Sequence[Candidate], *,
                    max_pairs: int | None = None, seed: int = 0) -> list[Pair]:
    """Pairs of a prompt's sampled candidates, all-vs-all or capped at ``max_pairs``.

    Candidates with the same text are one candidate (the first keeps its lineage): a pair of identical texts
    carries no preference and would only be flagged.
    """
    unique = list({c.text: c for c in reversed(candidates)}.values())[::-1]
    return [Pair.make(prompt_id, messages, unique[i], unique[j])
            for i, j in all_pairs(len(unique), max_pairs, seed=seed, salt=prompt_id)]


def revision_pairs(rows: Iterable[dict]) -> list[Pair]:
    """(original, final revision) pairs of an SL-CAI run, one per critique/revision chain.

    Input rows: ``chain_id``, ``round``, ``prompt_id``, ``messages`` (the prompt's conversation), ``original``,
    ``revision``, ``model``, and optionally ``response_key``/``revision_key`` (the ``revisions`` table joined
    with ``prompts``). A chain's final revision is its last round with a revision; a chain whose final revision
    equals its original gives no pair.
    """
    last: dict[str, dict] = {}
    for row in rows:
        if row.get("revision") is None:
            continue
        kept = last.get(row["chain_id"])
        if kept is None or row["round"] > kept["round"]:
            last[row["chain_id"]] = row
    pairs = []
    for chain, row in sorted(last.items()):
        if row["revision"] == row["original"]:
            continue
        original = Candidate(row["original"], "original", row.get("model"), row.get("response_key"))
        revision = Candidate(row["revision"], "revision", row.get("model"), row.get("revision_key"))
        pairs.append(Pair.make(row["prompt_id"], row["messages"], original, revision, chain_id=chain))
    return pairs


def as_given(pair: Pair) -> tuple[Candidate, Candidate]:
    """The two candidates in the order the caller gave them."""
    return (pair.b, pair.a) if pair.swapped else (pair.a, pair.b)

