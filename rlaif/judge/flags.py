"""Data-quality flags of judged pairs, written to ``row_flags`` (target 'pair'); ``preference_dataset`` leaves
flagged pairs out and ``preference_candidates`` shows every pair with its flags.

Flags about the two texts are keyed by the ``pair_id``; flags about one judge's verdict by the ``judgement_id``
(pair, judge model, constitution version, mode: see storage/005_judge.sql), so that in a jury one judge's
tie does not hide another judge's clear verdict.

| flag           | on         | value                                 | flagged when                     |
|----------------|------------|---------------------------------------|----------------------------------|
| `identical`    | pair       | 1                                     | texts equal up to case/spaces    |
| `length_ratio` | pair       | longer / shorter, in characters       | value > `max_length_ratio`       |
| `tie`          | judgement  | margin = abs(2 * decision - 1)        | value <= `tie_margin`            |
| `low_margin`   | judgement  | the same margin                       | `tie_margin` < value < `low_margin` |
| `inconsistent` | judgement  | share of verdicts whose orders agree  | value < `min_consistency`        |

Thresholds are settings (``RLAIF_PAIR_FLAGS_*`` variables, or ``PairFlagSettings(...)``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from rlaif.store import Store


class PairFlagSettings(BaseSettings):
    """Thresholds of the pair flags."""

    model_config = SettingsConfigDict(env_prefix="RLAIF_PAIR_FLAGS_", extra="forbid", frozen=True)

    tie_margin: float = Field(1e-9, ge=0.0, le=1.0, description="margin |2p-1| at or below which a pair is a tie")
    low_margin: float = Field(0.1, ge=0.0, le=1.0, description="margin below which a preference is too weak")
    min_consistency: float = Field(0.5, ge=0.0, le=1.0,
                                   description="share of verdicts whose two orders agree, below which a pair is "
                                               "order-inconsistent")
    max_length_ratio: float = Field(4.0, ge=1.0, description="longer/shorter length above which a pair is flagged")


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def length_ratio(a: str, b: str) -> float:
    """Longer over shorter, in characters of the stripped texts (an empty text counts as one character)."""
    la, lb = len(a.strip()), len(b.strip())
    return max(la, lb) / max(1, min(la, lb))


def _flag(target_id: str, flag: str, value: float, threshold: float, detail: str, run_id: str) -> dict:
    from rlaif.store import utcnow

    return {"target": "pair", "target_id": target_id, "flag": flag, "value": value, "threshold": threshold,
            "detail": detail, "run_id": run_id, "created_at": utcnow()}


def pair_flags(judgements: Iterable[dict], settings: PairFlagSettings, run_id: str) -> list[dict]:
    """Input: ``preference_judgements`` rows. Output: the ``row_flags`` rows they earn (one flag at most once)."""
    out: dict[tuple[str, str], dict] = {}

    def add(target_id: str, flag: str, value: float, threshold: float, detail: str) -> None:
        out.setdefault((target_id, flag), _flag(target_id, flag, value, threshold, detail, run_id))

    s = settings
    for j in judgements:
        a, b = j["response_a"], j["response_b"]
        if _normalised(a) == _normalised(b):
            add(j["pair_id"], "identical", 1.0, 1.0, "the two responses are the same text")
        ratio = length_ratio(a, b)
        if ratio > s.max_length_ratio:
            add(j["pair_id"], "length_ratio", ratio, s.max_length_ratio, f"one response is {ratio:.1f}x the other")
        if j.get("decision") is not None:
            margin = abs(2 * j["decision"] - 1)
            if margin <= s.tie_margin:
                add(j["judgement_id"], "tie", margin, s.tie_margin, "the judge preferred neither response")
            elif margin < s.low_margin:
                add(j["judgement_id"], "low_margin", margin, s.low_margin, f"margin {margin:.3f}")
        if j.get("consistency") is not None and j["consistency"] < s.min_consistency:
            add(j["judgement_id"], "inconsistent", j["consistency"], s.min_consistency,
                "the judge's verdict changed with the order of the responses")
    return list(out.values())


def write_pair_flags(store: Store, run_id: str, settings: PairFlagSettings | None = None) -> int:
    """Flag every judgement of a pair this run judged; returns the number of new flags (INSERT OR IGNORE).

    The prefs flow calls it at the end of a run (and may call it per batch: flags already stored stay).
    """
    rows = store.fetch(
        "SELECT judgement_id, pair_id, response_a, response_b, decision, consistency FROM preference_judgements "
        "WHERE pair_id IN (SELECT pair_id FROM comparisons WHERE run_id = ?)", [run_id])
    return store.insert("row_flags", pair_flags(rows, settings or PairFlagSettings(), run_id))
