"""A tiny random-init chat model for fast tests: a 2-layer Llama (hidden 64) with a locally trained tokenizer.

It behaves like a real model folder (config.json, model.safetensors, tokenizer, ChatML chat template, EOS), so
engines load it through the same code as SmolLM2, in well under a second, with no download and no GGUF. Its
text is random; tests check mechanics (batching, padding, counts, seeds), never quality.

Usage from a test: ``from tiny_model import make_tiny_model_dir`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_WORDS = (
    "the a an and or but if then because so of to in on at by for with from about as into over after before "
    "answer question response assistant user system helpful harmless honest critique revision request principle "
    "model human which is more less better worse safe unsafe kind rude true false yes no maybe please thank you "
    "write tell explain describe list give show help find make keep stop start go come see look read learn "
    "cat dog bird fish tree river mountain city house road car train book letter word sentence story poem song "
    "red green blue yellow black white small large old new good bad happy sad quick slow warm cold early late "
    "one two three four five six seven eight nine ten first second third last next every some many few all none"
).split()


def _corpus() -> list[str]:
    """A few hundred deterministic sentences made from the word list, plus judge-style lines."""
    lines = []
    for i in range(300):
        words = [_WORDS[(i * 7 + j * 13) % len(_WORDS)] for j in range(6 + i % 5)]
        lines.append(" ".join(words).capitalize() + ".")
    lines += [f"The answer is: ({c})" for c in "AB"] * 20
    lines += [f"Option {n} of {m}" for n in range(12) for m in range(3)]
    return lines


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def make_tiny_model_dir(path: Path, *, heads: int = 4) -> Path:
    """Build the tiny model folder at ``path`` (once: an existing build is reused) and return ``path``.

    ``heads=2`` gives head size 32, the smallest vLLM's CPU attention runs (it refuses the default's 16).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    tokenizer = _train_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    # Random init gives near-uniform next-token distributions; scaling the head makes them peaked, like a real
    # model's, so greedy decoding and sampling are clearly different.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=eos, pad_token_id=eos)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
