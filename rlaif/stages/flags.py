"""Data-quality flags: small pure functions from texts (or a run's lengths and texts) to flags.

Bai et al. 2022 (arXiv 2212.08073, section 3) fine-tune on every final revision. Kept: nothing is deleted;
every row stays in its table. Changed: rows that are likely useless for SFT are flagged, one ``row_flags`` row
each with the measured value and the threshold it was held against, and the dataset views leave them out
(storage/004_sft.sql). A flag says what was found:

- ``empty``: the model returned nothing.
- ``unchanged``: a revision (nearly) identical to the text it revised, by normalised Indel similarity
  (rapidfuzz: C++, ~1 us for a 600-character pair, against ~700 us for ``difflib``, whose autojunk heuristic
  also changes its answer for texts over 200 characters).
- ``refusal``: boilerplate evasion, by regexes kept in an editable data file (``rlaif/data/refusal_patterns.txt``).
- ``truncated``: generation stopped at ``max_tokens`` (finish reason ``length``).
- ``meta``: a revision that talks about the answer instead of being one ("The response refuses ...", "This
  answer ...", "Critique: ..."), by regexes in an editable data file (``rlaif/data/meta_patterns.txt``). Small
  models asked to rewrite after a critique often continue the critique instead; the paper's revisions are answers.
- ``not_revised``: a revision closer to its critique than to any answer it revises (the first answer or the text
  of its round), by word-level Indel similarity: the reviser restated the critique rather than rewriting.
- ``long`` / ``short``: a final answer's length is an outlier of the run, by the robust z-score
  0.6745 (x - median) / MAD (Iglewicz and Hoaglin 1993), which a few extreme rows cannot drag.
- ``near_duplicate``: final answers of different prompts that are nearly the same text (MinHash, below).

Near-duplicates: MinHash signatures of word 3-gram shingles, banded for locality-sensitive hashing, written here
with numpy instead of datasketch because datasketch's ``MinHashLSH`` keeps a Python dict entry per document and
band (tens of MB at 20,000 answers), while here a run's index is two flat arrays (20,000 x 64 uint32 signatures
and 20,000 x 16 band keys: 7.5 MB). Each document is verified against the first document of every bucket it
shares (estimated Jaccard from the signatures), which is linear in the run even when thousands of answers are
the same canned text, and flags every member of a group but the first.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from rlaif.errors import ConfigError
from rlaif.resources import package_file


@dataclass(frozen=True)
class Flag:
    """One finding about one row: what, the measured value, the threshold it crossed, a short reason."""

    flag: str
    value: float | None = None
    threshold: float | None = None
    detail: str = ""

    def row(self, target: str, target_id: str, run_id: str, created_at: object) -> dict:
        """The ``row_flags`` row (storage/003_row_flags.sql)."""
        return {"target": target, "target_id": target_id, "flag": self.flag, "value": self.value,
                "threshold": self.threshold, "detail": self.detail, "run_id": run_id, "created_at": created_at}


# -- per row ----------------------------------------------------------------------------------------------------


def empty(text: str | None) -> Flag | None:
    """Input: an output text (None when the model returned nothing). Output: the 'empty' flag, or None."""
    if text is None or not text.strip():
        return Flag("empty", 0.0, None, "the model returned no text")
    return None


def truncated(finish_reason: str | None) -> Flag | None:
    """Input: the engine's finish reason. Output: 'truncated' when generation ran out of tokens."""
    if finish_reason == "length":
        return Flag("truncated", None, None, "stopped at max_tokens (finish reason 'length')")
    return None


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def similarity(a: str, b: str) -> float:
    """Normalised Indel similarity (1 - insertions+deletions / total length) of the squeezed, lowercased texts."""
    from rapidfuzz.distance import Indel

    return float(Indel.normalized_similarity(_normalised(a), _normalised(b)))


def unchanged(before: str | None, after: str | None, threshold: float) -> Flag | None:
    """Input: the critiqued text and its revision. Output: 'unchanged' when their similarity >= threshold."""
    if not before or not after:
        return None
    value = similarity(before, after)
    if value >= threshold:
        return Flag("unchanged", round(value, 4), threshold, f"revision {value:.0%} similar to the text it revised")
    return None


def load_refusal_patterns(path: Path | None = None) -> re.Pattern[str]:
    """One regex of every line of ``path`` (default: the shipped list); a bad line is one ConfigError."""
    return load_patterns(path or package_file("data", "refusal_patterns.txt"), "refusal")


def load_meta_patterns(path: Path | None = None) -> re.Pattern[str]:
    """The ``meta`` regexes of ``path`` (default: the shipped ``rlaif/data/meta_patterns.txt``)."""
    return load_patterns(path or package_file("data", "meta_patterns.txt"), "meta")


def load_patterns(path: Path, what: str) -> re.Pattern[str]:
    """One case-insensitive, multiline regex of every non-comment line of ``path``; a bad line is one ConfigError."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the {what} patterns: {exc}") from None
    parts = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            re.compile(line)
        except re.error as exc:
            raise ConfigError(f"{path}:{number}: not a valid regular expression ({exc})") from None
        parts.append(f"(?:{line})")
    return re.compile("|".join(parts) or r"(?!)", re.IGNORECASE | re.MULTILINE)


def refusal(text: str | None, patterns: re.Pattern[str]) -> Flag | None:
    """Input: an output text. Output: 'refusal' naming the boilerplate found, or None."""
    match = patterns.search(text or "")
    if match is None:
        return None
    return Flag("refusal", None, None, f"refusal boilerplate: {match.group(0)[:60]!r}")


def meta(text: str | None, patterns: re.Pattern[str]) -> Flag | None:
    """Input: a revision. Output: 'meta' naming the commentary found (it talks about an answer), or None."""
    match = patterns.search(text or "")
    if match is None:
        return None
    return Flag("meta", None, None, f"talks about the answer: {match.group(0).strip()[:60]!r}")


def word_similarity(a: str, b: str) -> float:
    """Normalised Indel similarity of the two texts' lowercased word sequences (0-1)."""
    from rapidfuzz.distance import Indel

    return float(Indel.normalized_similarity(_WORD.findall(a.lower()), _WORD.findall(b.lower())))


SHORT_WORDS, SHORT_SIMILARITY = 16, 0.9


def not_revised(revision: str | None, critique: str | None, answers: Sequence[str | None],
                threshold: float = 0.6) -> Flag | None:
    """Input: a revision, its critique and the answers it revises. Output: 'not_revised' when the revision is more
    similar to the critique than to every answer, and at least ``threshold`` similar to it (a real rewrite shares
    few words with either, and would otherwise be a coin toss; under ``SHORT_WORDS`` words, at least
    ``SHORT_SIMILARITY``); the value is its similarity to the critique."""
    given = [a for a in answers if a]
    if not revision or not critique or not given:
        return None
    to_critique = word_similarity(revision, critique)
    to_answer = max(word_similarity(revision, a) for a in given)
    # Between texts of a few words one shared phrase ("your last response") moves the similarity by 0.3: there,
    # only a near-copy counts.
    short = min(len(_WORD.findall(revision)), len(_WORD.findall(critique))) < SHORT_WORDS
    if to_critique > to_answer and to_critique >= (max(threshold, SHORT_SIMILARITY) if short else threshold):
        return Flag("not_revised", round(to_critique, 4), threshold,
                    f"closer to its critique ({to_critique:.2f}) than to any answer ({to_answer:.2f})")
    return None


def answer_flags(text: str | None, finish_reason: str | None, patterns: re.Pattern[str]) -> list[Flag]:
    """The per-row flags of any generated answer: empty, truncated, refusal."""
    found = [empty(text), truncated(finish_reason)]
    if text:
        found.append(refusal(text, patterns))
    return [f for f in found if f is not None]


# -- over a run ----------------------------------------------------------------------------------------------------


def robust_z(values: Sequence[float] | np.ndarray) -> np.ndarray | None:
    """0.6745 (x - median) / MAD; None when the values have no spread to measure against."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None
    median = np.median(x)
    mad = np.median(np.abs(x - median))
    if mad > 0:
        return 0.6745 * (x - median) / mad
    mean_ad = np.mean(np.abs(x - median))  # more than half the values equal: fall back to the mean deviation
    return (x - median) / (1.253314 * mean_ad) if mean_ad > 0 else None


def length_outliers(lengths: Sequence[int] | np.ndarray, threshold: float, min_rows: int) -> dict[int, Flag]:
    """Input: the run's final-answer lengths (characters). Output: index -> 'long' / 'short' flag."""
    if len(lengths) < min_rows:
        return {}
    z = robust_z(lengths)
    if z is None:
        return {}
    median = float(np.median(np.asarray(lengths)))
    out = {}
    for i in np.flatnonzero(np.abs(z) > threshold):
        kind = "long" if z[i] > 0 else "short"
        out[int(i)] = Flag(kind, round(float(z[i]), 3), threshold,
                           f"{kind}: {int(lengths[i])} characters against a run median of {median:.0f}")
    return out


NUM_PERM = 64
BANDS = 16  # of NUM_PERM // BANDS = 4 rows: candidate probability 1 - (1 - s^4)^16, 0.9998 at s = 0.8
_PRIME = (1 << 61) - 1
_rng = np.random.default_rng(20221215)  # fixed: signatures must compare across processes and runs
_A = _rng.integers(1, 1 << 31, NUM_PERM, dtype=np.uint64)
_B = _rng.integers(0, 1 << 31, NUM_PERM, dtype=np.uint64)
_BAND_MIX = _rng.integers(1, 1 << 63, NUM_PERM // BANDS, dtype=np.uint64) | np.uint64(1)
_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = 3) -> list[bytes]:
    """Word n-grams of the lowercased text (the whole text when it has fewer than n words)."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return [" ".join(words).encode()] if words else []
    return [" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)]


def minhash(text: str) -> np.ndarray | None:
    """The NUM_PERM-slot MinHash signature (uint32) of ``text``'s shingles; None for a text without words."""
    grams = shingles(text)
    if not grams:
        return None
    hashes = np.fromiter((zlib.crc32(g) for g in set(grams)), dtype=np.uint64)
    # (a * h + b) mod p: a, h, b < 2^32, so the product cannot overflow 64 bits before the reduction.
    permuted = (np.outer(hashes, _A) + _B) % np.uint64(_PRIME)
    return (permuted.min(axis=0) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def band_keys(signatures: np.ndarray) -> np.ndarray:
    """(n, NUM_PERM) signatures -> (n, BANDS) uint64 keys, one hash of each band's rows (wrapping arithmetic)."""
    rows = NUM_PERM // BANDS
    banded = signatures.astype(np.uint64).reshape(len(signatures), BANDS, rows)
    with np.errstate(over="ignore"):
        return (banded * _BAND_MIX).sum(axis=2, dtype=np.uint64)


def near_duplicates(signatures: np.ndarray, threshold: float) -> dict[int, tuple[int, float]]:
    """Input: (n, NUM_PERM) signatures in a fixed order. Output: index -> (earlier index it duplicates, est.
    Jaccard), for every document whose estimated Jaccard with the first document of a bucket it shares is at
    least ``threshold``. Linear in n: each document is compared with one representative per band."""
    n = len(signatures)
    found: dict[int, tuple[int, float]] = {}
    if n < 2:
        return found
    keys = band_keys(signatures)
    for band in range(BANDS):
        order = np.argsort(keys[:, band], kind="stable")  # stable: equal keys stay in index order
        sorted_keys = keys[order, band]
        starts = np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1]))
        first = order[np.maximum.accumulate(np.where(starts, np.arange(n), 0))]
        members = np.flatnonzero(first != order)
        if members.size == 0:
            continue
        docs, reps = order[members], first[members]
        est = (signatures[docs] == signatures[reps]).mean(axis=1)
        for doc, rep, value in zip(docs.tolist(), reps.tolist(), est.tolist()):
            if value >= threshold and (doc not in found or found[doc][1] < value):
                found[doc] = (rep, value)
    return found


def duplicate_flags(ids: Sequence[str], signatures: Iterable[np.ndarray], threshold: float) -> dict[int, Flag]:
    """'near_duplicate' flags for documents ``ids`` (sorted: the first of a group is the one kept)."""
    matrix = np.vstack(list(signatures)) if ids else np.zeros((0, NUM_PERM), dtype=np.uint32)
    return {doc: Flag("near_duplicate", round(value, 4), threshold,
                      f"near-duplicate of {ids[rep]} (estimated Jaccard {value:.2f})")
            for doc, (rep, value) in near_duplicates(matrix, threshold).items()}
