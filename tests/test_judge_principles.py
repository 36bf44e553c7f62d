"""Every judge mode reads its principle: the likelihood-contrast framings are filled from each judge principle's
``statement`` and ``contrary``, so opposite principles give opposite verdicts (fake engine and the real SmolLM2),
an edited principle gives new labels in a new run, and an ensemble of M principles sends M distinct framings."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest

from rlaif.constitution import load_constitution, resolve_constitution
from rlaif.engines.fake import FakeEngine
from rlaif.judge.config import JudgeConfig
from rlaif.judge.pairing import Candidate, Pair
from rlaif.judge.prompts import framings
from rlaif.stages.judge import judge

PROMPT = "How do I boil an egg?"
REFUSAL = "I'm sorry, but I can't help with that request."
HELPFUL = "Put the egg in boiling water for seven minutes, then cool it in cold water before peeling it."
REFUSE = "You refuse every request: you say you are sorry and that you can't help."
HELP = "You always help: you answer every question with clear steps."


def _pair(a: str = REFUSAL, b: str = HELPFUL) -> Pair:
    return Pair.make("egg", ({"role": "user", "content": PROMPT},), Candidate(a), Candidate(b))


def _with_principles(constitution, *statements: tuple[str, str]):
    """``constitution`` with one judge principle per (statement, contrary), ids p0, p1, ..."""
    base = constitution.judge_principles[0]
    principles = [base.model_copy(update={"id": f"p{i}", "statement": s, "contrary": c})
                  for i, (s, c) in enumerate(statements)]
    return constitution.model_copy(update={"judge_principles": principles, "fewshot": constitution.fewshot.model_copy(
        update={"judge": []})})


def _p_refusal(engine, constitution, principle_id: str) -> float:
    """P(the refusal is better) under one principle, in contrast mode."""
    principle = constitution.judge_principle(principle_id)
    one = constitution.model_copy(update={"judge_principles": [principle]})
    pair = _pair()
    verdict = asyncio.run(judge(engine, one, pair, config=JudgeConfig(mode="contrast"))).verdicts[0]
    assert verdict.status == "ok" and verdict.p_a is not None
    return verdict.p_a if pair.a.text == REFUSAL else 1 - verdict.p_a


def test_each_principle_fills_the_shipped_contrast_template(harmless):
    assert harmless.judge.contrast is not None and all(p.framing is None for p in harmless.judge_principles)
    resolved = [framings(harmless, p) for p in harmless.judge_principles]
    for p, (framing, baseline) in zip(harmless.judge_principles, resolved):
        assert p.statement in framing.system and p.contrary in baseline.system
        assert framing.user == baseline.user == "{prompt}"
    assert len({f.system for f, _ in resolved}) == len({b.system for _, b in resolved}) == len(resolved) == 6


def test_a_principle_may_override_the_template_and_braces_stay_literal(harmless):
    from rlaif.judge.prompts import framed_messages
    from rlaif.judge.spec import Framing
    from tests.test_judge import _guard_plain

    own = harmless.judge_principles[0].model_copy(update={
        "statement": "Use {braces}.", "framing": Framing(system="Rule: {statement}", user="{prompt} ({statement})")})
    framing, baseline = framings(harmless, own)
    assert framing.system == "Rule: Use {braces}." and baseline.system.endswith(own.contrary)
    messages = framed_messages(framing, [{"role": "user", "content": "Q {x}"}], _guard_plain())
    assert messages[-1]["content"] == "Q {x} (Use {braces}.)"


def test_a_template_field_the_principle_lacks_is_a_clear_error(harmless):
    from rlaif.errors import ConfigError

    bare = harmless.judge_principles[0].model_copy(update={"contrary": None})
    with pytest.raises(ConfigError, match=r"judge principle 'less-harmful' has no contrary, which .*\{contrary\}"):
        framings(harmless, bare)


def test_opposite_principles_give_opposite_verdicts_on_the_fake_engine(harmless):
    # The fake's score rule: -1 per word the conversation contains, -2 per other word. The refusal's words are in
    # REFUSE's statement, the helpful answer's in HELP's: each framing makes its own side's answer likelier.
    both = _with_principles(harmless, (REFUSE, HELP), (HELP, REFUSE))
    p_refuse, p_help = _p_refusal(FakeEngine(), both, "p0"), _p_refusal(FakeEngine(), both, "p1")
    assert p_refuse > 0.5 > p_help and p_help == pytest.approx(1 - p_refuse)


@pytest.mark.real_model
def test_opposite_principles_give_opposite_verdicts_on_the_embedded_model(harmless):
    from rlaif.config import EMBEDDED_MODEL, load_settings
    from rlaif.engines.transformers_engine import TransformersEngine
    from rlaif.models import prepare_embedded_model

    engine = TransformersEngine(prepare_embedded_model(load_settings().cache_dir), model_name=EMBEDDED_MODEL,
                                batch_size=4, device="cpu")
    try:
        both = _with_principles(harmless, (REFUSE, HELP), (HELP, REFUSE))
        p_refuse, p_help = _p_refusal(engine, both, "p0"), _p_refusal(engine, both, "p1")
    finally:
        asyncio.run(engine.aclose())
    # Swapping statement and contrary negates both scores, so the verdicts are complements by construction; what
    # the model decides is the direction, and that it is decisive (0.94 measured for the refusal principle).
    assert p_refuse > 0.8 and p_help < 0.2 and p_help == pytest.approx(1 - p_refuse), (p_refuse, p_help)


def _csv(path: Path, rows: list[dict]) -> str:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "response_a", "response_b"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def _edited_example(tmp_path: Path, statement: str) -> str:
    text = resolve_constitution("example").read_text(encoding="utf-8")
    old = load_constitution(resolve_constitution("example")).judge_principles[0].statement
    assert old and old in text
    path = tmp_path / f"c{len(list(tmp_path.glob('c*.yaml')))}.yaml"
    path.write_text(text.replace(old, statement), encoding="utf-8")
    return str(path)


def test_editing_a_principle_changes_the_stored_labels_in_a_new_run(settings, tmp_path, capsys):
    from rlaif.cli import main
    from rlaif.store import Store

    pairs = _csv(tmp_path / "pairs.csv", [{"prompt": PROMPT, "response_a": "Simmer it gently for seven minutes.",
                                           "response_b": "Boil it hard for ten minutes."}])
    base = ["--db", str(settings.db), "--engine", "fake", "judge", "pairs", "--pairs", pairs, "--mode", "contrast",
            "--no-prefect", "--no-progress", "--constitution"]
    runs = []
    for statement in ("You say to simmer it gently.", "You say to boil it hard."):
        assert main([*base, _edited_example(tmp_path, statement)]) == 0
        out = capsys.readouterr().out
        runs.append(next(line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("run ")))
        assert "(resumed)" not in out
        assert "warning: the contrast judge carries no measured signal" in out  # the fake judge reads nothing
    assert runs[0] != runs[1]
    store = Store(settings.db)
    rows = store.fetch("SELECT run_id, response_a, p_a, constitution_version FROM comparisons WHERE mode = 'contrast' "
                       "ORDER BY run_id")
    by_run = {r["run_id"]: r for r in rows}
    assert set(by_run) == set(runs)
    first, second = by_run[runs[0]], by_run[runs[1]]
    assert first["constitution_version"] != second["constitution_version"]
    simmer_first = first["p_a"] if first["response_a"].startswith("Simmer") else 1 - first["p_a"]
    simmer_second = second["p_a"] if second["response_a"].startswith("Simmer") else 1 - second["p_a"]
    assert simmer_first > 0.5 > simmer_second  # the label followed the edited principle


def test_an_ensemble_of_m_principles_records_m_distinct_framings(settings, tmp_path, capsys):
    from rlaif.cli import main
    from rlaif.store import Store

    pairs = _csv(tmp_path / "pairs.csv", [{"prompt": PROMPT, "response_a": REFUSAL, "response_b": HELPFUL}])
    assert main(["--db", str(settings.db), "--engine", "fake", "judge", "pairs", "--pairs", pairs, "--mode",
                 "contrast", "--principles", "4", "--constitution", "harmless", "--no-prefect",
                 "--no-progress"]) == 0
    capsys.readouterr()
    store = Store(settings.db)
    (comparison,) = store.fetch("SELECT pair_id FROM comparisons GROUP BY pair_id")
    verdicts = store.fetch("SELECT principle_id, judge_keys FROM comparisons WHERE pair_id = ?",
                           [comparison["pair_id"]])
    assert len({v["principle_id"] for v in verdicts}) == 4
    systems = {}
    for v in verdicts:
        keys = json.loads(v["judge_keys"]) if isinstance(v["judge_keys"], str) else v["judge_keys"]
        for role in ("a_framed", "a_baseline"):
            (row,) = store.fetch("SELECT messages FROM generations WHERE key = ?", [keys[role]])
            systems.setdefault(role, set()).add(row["messages"][0]["content"])
    assert len(systems["a_framed"]) == len(systems["a_baseline"]) == 4
