"""Request keys: the fast paths of chat_key / choice_key give exactly the generic content hash."""

from __future__ import annotations

import random

import pytest

from rlaif.engines.base import SamplingParams, chat_key, choice_key, content_hash


def _text(rng: random.Random) -> str:
    pools = ["abc xyz", "é ☃ 漢字 🙂", '"\\/\n\t\r\b\f', "".join(map(chr, range(32))), "\u2028\u2029\x7f\ufeff"]
    return "".join(rng.choice(pools) for _ in range(rng.randint(0, 12)))


@pytest.mark.parametrize("seed", range(25))
def test_fast_keys_equal_the_generic_hash(seed):
    rng = random.Random(seed)
    messages = [{"role": rng.choice(["system", "user", "assistant"]), "content": _text(rng)}
                for _ in range(rng.randint(0, 6))]
    params = SamplingParams(temperature=rng.choice([0.0, 0.7, 1e-05, 1.25]), top_p=rng.choice([1.0, 0.95]),
                            max_tokens=rng.randint(1, 9000), seed=rng.choice([None, rng.randint(0, 2**32)]),
                            stop=tuple(_text(rng) for _ in range(rng.randint(0, 2))))
    model = _text(rng) or "m"
    assert chat_key(messages, params, model) == content_hash("chat", list(messages), params, model)
    prompt = _text(rng)
    assert choice_key(prompt, ("A", "B"), model) == content_hash("choice", prompt, ["A", "B"], model)


def test_a_key_changes_with_any_part():
    messages = [{"role": "user", "content": "hi"}]
    base = chat_key(messages, SamplingParams(), "m")
    assert base != chat_key(messages, SamplingParams(seed=1), "m") != chat_key(messages, SamplingParams(), "n")
    assert base != chat_key([{"role": "user", "content": "hi "}], SamplingParams(), "m")


@pytest.mark.parametrize("parts", [
    ("seed", 0, "abc", "critique", 2),
    ("prompt", [{"role": "user", "content": "é ☃ \n \u2028"}]),
    ("big", 2**70, -2**70), ("mixed", 0.5, None, True), ("nested", {"b": [1, {"a": "x"}], "a": None}),
])
def test_content_hash_fast_path_is_the_json_digest(parts):
    import hashlib
    import json

    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    assert content_hash(*parts) == hashlib.sha256(blob).hexdigest()[:32]


@pytest.mark.parametrize("params", [
    SamplingParams(), SamplingParams(temperature=0, top_p=1, max_tokens=7, seed=2**40, stop=("\n", "é")),
    SamplingParams(temperature=1e-05, top_p=0.95, ignore_eos=True), SamplingParams(temperature=float("nan")),
])
def test_the_sampling_options_encode_as_json_does(params):
    messages = [{"role": "user", "content": "hi"}]
    assert chat_key(messages, params, "m") == content_hash("chat", messages, params, "m")
