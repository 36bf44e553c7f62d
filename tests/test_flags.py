"""Data-quality flags on crafted rows: each flag function, the shipped refusal patterns, the run-level passes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rlaif.errors import ConfigError
from rlaif.stages import flags


def test_empty_and_truncated():
    assert flags.empty(None).flag == flags.empty("  \n").flag == "empty" and flags.empty("x") is None
    assert flags.truncated("length").flag == "truncated"
    assert flags.truncated("stop") is None and flags.truncated(None) is None


def test_unchanged_uses_a_normalised_similarity():
    same = flags.unchanged("Hello there,  World.", "hello there, world.", 0.95)
    assert same is not None and same.value == 1.0 and same.threshold == 0.95
    near = flags.unchanged("I can help you bake bread at home today.", "I can help you bake bread at home.", 0.8)
    assert near is not None and 0.8 <= near.value < 1.0 and "similar" in near.detail
    assert flags.unchanged("Slash his tyres.", "Talk to your neighbour about the noise instead.", 0.95) is None
    assert flags.unchanged("x", None, 0.95) is None


@pytest.mark.parametrize("text", [
    "As an AI language model, I cannot do that.",
    "I'm sorry, but I can't help with that.",
    "I cannot assist with that request.",
    "I must respectfully decline.",
])
def test_shipped_refusal_patterns_catch_boilerplate(text):
    found = flags.refusal(text, flags.load_refusal_patterns())
    assert found is not None and found.flag == "refusal" and "boilerplate" in found.detail


@pytest.mark.parametrize("text", [
    "Here is a simple tomato sauce: simmer tomatoes with garlic and olive oil.",
    "I can't stress enough how much sleep matters; keep a regular schedule.",
])
def test_shipped_refusal_patterns_leave_ordinary_answers_alone(text):
    assert flags.refusal(text, flags.load_refusal_patterns()) is None


def test_refusal_patterns_come_from_an_editable_file(tmp_path):
    mine = tmp_path / "patterns.txt"
    mine.write_text("# my list\n\n\\bnope\\b\n", encoding="utf-8")
    patterns = flags.load_refusal_patterns(mine)
    assert flags.refusal("Nope, not today", patterns) is not None
    assert flags.refusal("As an AI language model", patterns) is None  # only the user's patterns apply
    mine.write_text("fine\n(unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"patterns.txt:2: not a valid regular expression"):
        flags.load_refusal_patterns(mine)


def test_answer_flags_combine_the_row_checks():
    patterns = flags.load_refusal_patterns()
    found = flags.answer_flags("As an AI language model, I", "length", patterns)
    assert sorted(f.flag for f in found) == ["refusal", "truncated"]
    assert [f.flag for f in flags.answer_flags(None, "stop", patterns)] == ["empty"]


def test_length_outliers_by_robust_z_score():
    lengths = [100 + (i % 7) for i in range(40)] + [5000, 3]
    found = flags.length_outliers(lengths, threshold=3.5, min_rows=20)
    assert set(found) == {40, 41}
    assert found[40].flag == "long" and found[41].flag == "short" and found[40].value > 3.5
    assert "5000 characters against a run median of 103" in found[40].detail
    assert flags.length_outliers(lengths[:10] + [5000], threshold=3.5, min_rows=20) == {}  # too few rows
    assert flags.length_outliers([50] * 30, threshold=3.5, min_rows=20) == {}  # no spread, nothing stands out
    mostly_equal = [50] * 30 + [51, 52, 900]  # MAD is 0: the mean deviation stands in
    assert set(flags.length_outliers(mostly_equal, threshold=3.5, min_rows=20)) == {32}


def _words(i: int) -> str:
    rng = np.random.default_rng(i)
    return " ".join(f"w{x}" for x in rng.integers(0, 5000, 60))


def test_near_duplicates_flag_all_but_the_first_of_a_group():
    texts = [_words(i) for i in range(50)]
    base = texts[7].split()
    texts.append(" ".join(base[:30] + ["changed"] + base[31:]))  # 50: one word of 60 differs (Jaccard 0.9)
    texts.append(texts[7].upper())  # 51: same words, other case
    ids = [f"t{i:03d}" for i in range(len(texts))]
    found = flags.duplicate_flags(ids, [flags.minhash(t) for t in texts], threshold=0.8)
    assert set(found) == {50, 51}
    assert found[50].flag == "near_duplicate" and "near-duplicate of t007" in found[50].detail
    assert 0.8 <= found[50].value < 1.0 and found[51].value == 1.0


def test_near_duplicates_stay_linear_when_everything_is_the_same_text():
    signature = flags.minhash("the same canned refusal for every prompt")
    started = time.perf_counter()
    found = flags.near_duplicates(np.vstack([signature] * 20_000), threshold=0.8)
    assert len(found) == 19_999 and 0 not in found
    assert time.perf_counter() - started < 5.0  # a pairwise pass would be 2e8 comparisons


def test_minhash_signatures_are_the_same_in_every_process():
    # pinned: signatures are compared across runs, so hashing must not depend on PYTHONHASHSEED
    assert flags.minhash("the quick brown fox jumps")[:3].tolist() == PINNED
    assert flags.minhash("...") is None and flags.shingles("Two words") == [b"two words"]


PINNED = [796558351, 2272912219, 1751773908]


def test_thresholds_are_settings(tmp_path, monkeypatch):
    from rlaif.config import load_settings

    monkeypatch.setenv("RLAIF_CONFIG", str(tmp_path / "rlaif.toml"))
    (tmp_path / "rlaif.toml").write_text("[flags]\nlength_z = 5.0\n", encoding="utf-8")
    monkeypatch.setenv("RLAIF_FLAGS_UNCHANGED_SIMILARITY", "0.5")
    s = load_settings()
    assert (s.flags.unchanged_similarity, s.flags.length_z, s.flags.near_duplicate) == (0.5, 5.0, 0.8)
    monkeypatch.setenv("RLAIF_FLAGS_NEAR_DUPLICATE", "2")
    with pytest.raises(ConfigError, match=r"flags.near_duplicate \(from env RLAIF_FLAGS_NEAR_DUPLICATE\)"):
        load_settings()
