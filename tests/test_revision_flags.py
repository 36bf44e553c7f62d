"""The revision-fidelity flags (``meta``, ``not_revised``): the functions, the editable pattern file, their rows
through ``RowFlagger`` and the SFT views (flagged rows stay in sft_candidates and leave sft_dataset); the summary's
advice when rows hit max_tokens; and the labelled set the benchmark measures them on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlaif.engines.base import Completion
from rlaif.errors import ConfigError
from rlaif.stages import flags

LABELS = Path(__file__).parent / "data" / "revision_labels.jsonl"


def test_meta_catches_commentary_and_spares_answers():
    patterns = flags.load_meta_patterns()
    commentary = [
        "The response refuses a caring and reasonable request. The person wants to support a friend.",
        "This answer helps someone do something dangerous and against the law.",
        "Critique: it gives private details away.",
        "Here is a revised response that avoids the harm.",
        "Sure.\nThe previous response encourages cheating on a test.",
    ]
    answers = [
        "It's kind of you to look out for her. Listen without judging and tell her you care.",
        "Boil the pasta for ten minutes, then stir in the tomato sauce. The answer is in the timing.",
        "I can't help you break into a car, but a locksmith can open yours if you show proof you own it.",
    ]
    for text in commentary:
        found = flags.meta(text, patterns)
        assert found is not None and found.flag == "meta" and "talks about the answer" in found.detail, text
    for text in answers:
        assert flags.meta(text, patterns) is None, text
    assert flags.meta(None, patterns) is None


def test_meta_patterns_are_editable_and_a_bad_line_is_one_error(tmp_path):
    mine = tmp_path / "meta.txt"
    mine.write_text("# my own\n^\\s*as requested\\b\n")
    assert flags.meta("As requested, here it is.", flags.load_meta_patterns(mine)) is not None
    assert flags.meta("The response is harmful.", flags.load_meta_patterns(mine)) is None
    mine.write_text("ok\n(unclosed\n")
    with pytest.raises(ConfigError, match=r"meta.txt:2: not a valid regular expression"):
        flags.load_meta_patterns(mine)


def test_not_revised_compares_the_revision_with_its_critique_and_the_answers():
    critique = "The response helps someone pick a lock, which could be used to break into a home."
    answer = "Insert a tension wrench, then rake the pins until the lock turns."
    copied = "The response helps someone pick a lock, which could be used to break into homes."
    rewritten = "I can't help with opening a lock that isn't yours; a licensed locksmith can open your own."
    found = flags.not_revised(copied, critique, [answer, answer])
    assert found is not None and found.flag == "not_revised" and found.value > 0.8 and found.threshold == 0.6
    assert flags.not_revised(rewritten, critique, [answer]) is None
    assert flags.not_revised(copied, None, [answer]) is None and flags.not_revised(copied, critique, [None]) is None


def test_rowflagger_writes_both_flags_and_the_views_drop_the_rows(tmp_path):
    from store_rows import prompt

    from rlaif.config import FlagSettings
    from rlaif.quality import RowFlagger
    from rlaif.stages.critique_revise import Revisions, Round
    from rlaif.store import Store, utcnow

    critique = ("The response helps someone cheat on an exam, which is dishonest and unfair to the other students "
                "and could get them expelled from school.")
    rounds = [Round(1, "unethical", "Copy from your neighbour's paper.",
                    Completion(key="c1", model="m", text=critique),
                    Completion(key="r1", model="m", text="The response helps someone cheat on an exam, which is "
                                                         "dishonest, unfair to other students and could get them "
                                                         "expelled."))]
    flagger = RowFlagger("run1", FlagSettings(), flags.load_refusal_patterns())
    found = {r["flag"]: r for r in flagger.revisions("chain1", Revisions(rounds=rounds, target=1))}
    assert set(found) == {"meta", "not_revised"} and found["meta"]["target_id"] == "chain1:1"

    store = Store(tmp_path / "v.duckdb")
    store.migrate()
    store.write({"prompts": [prompt("p1", "How do I cheat on my exam?")], "revisions": [{
        "chain_id": "chain1", "round": 1, "run_id": "run1", "prompt_id": "p1",
        "principle_id": "unethical", "original": rounds[0].before, "before": rounds[0].before, "critique": critique,
        "revision": rounds[0].revision.text, "constitution_name": "harmless", "constitution_version": "v",
        "model": "m", "created_at": utcnow()}], "row_flags": list(found.values())})
    (candidate,) = store.fetch("SELECT flags FROM sft_candidates WHERE chain_id = 'chain1'")
    assert candidate["flags"] == ["meta", "not_revised"]
    assert store.fetch("SELECT * FROM sft_dataset WHERE chain_id = 'chain1'") == []


def test_the_summary_says_how_to_raise_a_limit_that_was_hit():
    from rlaif.cli.generate import limit_advice

    base = {"flags": {}, "skipped_prompts": 0, "max_tokens": 160}
    assert limit_advice(base) == []
    (line,) = limit_advice({**base, "flags": {"response truncated": 2, "revision truncated": 1, "revision meta": 4}})
    assert "3 rows stopped at max_tokens = 160" in line and "--max-tokens (e.g. --max-tokens 320)" in line
    assert len(limit_advice({**base, "flags": {"response truncated": 1}, "skipped_prompts": 2})) == 2


def test_the_labelled_revisions_are_real_and_labelled():
    rows = [json.loads(line) for line in LABELS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 100
    assert {r["label"] for r in rows} == {"meta", "not_revised", "fine"}
    for r in rows:
        assert r["revision"].strip() and r["critique"].strip() and r["original"].strip() and r["model"]
