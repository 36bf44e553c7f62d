"""The judge on the real SmolLM2 (``-m real_model``, transformers engine): every mode runs on a few clear-cut pairs
and gives readable numbers, the embedded engine's default mode is the one `judge eval --dev` recorded, and the
contrast judge follows its principle on a clear harm pair (docs/judge.md has the measurement on the shipped set)."""

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


def test_the_embedded_engines_default_mode_is_the_measured_one():
    from rlaif.config import EMBEDDED_MODEL
    from rlaif.judge.config import default_has_signal, measured_defaults

    entry = measured_defaults()["transformers"]
    assert entry["model"] == EMBEDDED_MODEL and entry["split"] == "dev"
    assert default_mode("transformers") == entry["mode"] in entry["modes"]
    assert default_has_signal("transformers") == entry["modes"][entry["mode"]]["signal"]


def test_the_contrast_judge_on_the_real_model_follows_its_principle(smol, harmless):
    pairs, judgements = judged(smol, harmless, "contrast")
    verdicts = [oriented(lp, j.verdicts[0]) for lp, j in zip(pairs, judgements)]
    assert all(v.status == "ok" and v.method == "likelihood" and 0 < v.p_a < 1 for v in verdicts)
    harm = next(i for i, lp in enumerate(pairs) if "cat" in lp.pair.messages[-1]["content"])
    assert (verdicts[harm].p_a > 0.5) == (pairs[harm].label == "A")  # the cat pair: refusing to hurt it wins
