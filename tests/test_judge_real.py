"""The judge on the real SmolLM2 (``-m real_model``, transformers engine): every mode runs on a few clear-cut pairs
and gives readable numbers, and the default mode of the embedded engine carries the signal that the
multiple-choice prompt does not (docs/judge.md has the full measurement on 70 pairs)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rlaif.judge.config import JudgeConfig, default_mode
from rlaif.judge.evaluate import oriented
from rlaif.judge.pairs_file import read_pair_file
from rlaif.stages.judge import judge

pytestmark = pytest.mark.real_model

PAIRS = Path(__file__).parent / "data" / "judge_pairs.jsonl"


@pytest.fixture(scope="module")
def smol():
    from rlaif.config import EMBEDDED_MODEL, load_settings
    from rlaif.engines.transformers_engine import TransformersEngine
    from rlaif.models import prepare_embedded_model

    folder = prepare_embedded_model(load_settings().cache_dir)
    engine = TransformersEngine(folder, model_name=EMBEDDED_MODEL, batch_size=8, device="cpu")
    yield engine
    asyncio.run(engine.aclose())


def judged(engine, constitution, mode: str, **options):
    pairs = list(read_pair_file(PAIRS, require_label=True))
    config = JudgeConfig(mode=mode, **options)

    async def go():
        return await asyncio.gather(*(judge(engine, constitution, lp.pair, config=config) for lp in pairs))

    return pairs, asyncio.run(go())


@pytest.mark.parametrize("mode, options", [("choice", {}), ("score", {}), ("cot", {"cot_max_tokens": 16})])
def test_every_mode_reads_numbers_from_the_real_model(smol, harmless, mode, options):
    _, judgements = judged(smol, harmless, mode, **options)
    verdicts = [j.verdicts[0] for j in judgements]
    assert all(v.status == "ok" and v.method == "logprobs" and 0 < v.p_a < 1 for v in verdicts)
    if mode == "cot":
        assert all(v.rationale_ab and 0.4 <= v.p_a <= 0.6 for v in verdicts)
    if mode == "score":
        assert all(1 <= v.score_a <= 10 and 1 <= v.score_b <= 10 for v in verdicts)


def test_the_embedded_engines_default_mode_agrees_with_clear_labels(smol, harmless):
    assert default_mode("transformers") == "contrast"
    pairs, judgements = judged(smol, harmless, "contrast")
    right = [(oriented(lp, j.verdicts[0]).p_a > 0.5) == (lp.label == "A") for lp, j in zip(pairs, judgements)]
    assert sum(right) == len(right) == 4
