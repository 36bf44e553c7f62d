"""Training data: the dataset views read by split, tokenized as at generation, batched by length.

- **Rows** come from the views users query (``sft_dataset``, ``preference_dataset``; the ``prompts`` table for
  RL), ordered by their keys. The train/eval split is the one the ``prompts`` table records, which follows from
  the prompt's hash alone (``rlaif.prompts.PromptRow.split``), so it is the same on every run and machine.
- **The chat template** is applied exactly as the transformers engine applies it at generation: the tokenizer's
  own template, ``add_generation_prompt=True`` for the prompt, tokenized with ``add_special_tokens=False``. So
  the prompt tokens a model trains on are the tokens it was (and will be) given. An assistant turn's tokens are
  what the template renders after that prompt, up to and including its end-of-turn token; text the template
  puts after that token (ChatML's newline) is never generated, so it is not trained on.
- **Loss masks** cover the assistant tokens only: by default the last assistant turn (the completion the dataset
  is about, e.g. the revision); ``train_on="all"`` adds the earlier assistant turns of a multi-turn prompt.
- **Batches** are length-bucketed: each epoch is shuffled, cut into windows of ``BUCKET_WINDOW`` batches, sorted
  by length inside a window and cut into batches, whose order is shuffled again. Each batch is then padded only
  to its own longest row, and rows of similar length share batches (no packing, so no cross-contamination).
- **The dataset version** is a hash of the sorted set of row keys read, with their count.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlaif.engines.base import content_hash
from rlaif.errors import ConfigError
from rlaif.prompts import PromptRow

if TYPE_CHECKING:
    import torch

    from rlaif.store import Store

BUCKET_WINDOW = 16  # batches sorted together: big enough to group lengths, small enough to keep batches random

SFT_QUERY = """
SELECT chain_id AS key, prompt_id, messages, split FROM sft_dataset ORDER BY chain_id
"""
# Every round's revision as its own example (the paper trained on revisions 1-4). The ``sft_rounds`` view of
# `generate sft` is read when the database has it; before that view exists, the same rows come from
# ``revisions`` directly (without the data-quality flags that view leaves out).
SFT_ROUNDS_VIEW_QUERY = """
SELECT chain_id || '/' || CAST(round AS VARCHAR) AS key, prompt_id, messages, split
FROM sft_rounds ORDER BY chain_id, round
"""
SFT_ROUNDS_FALLBACK_QUERY = """
SELECT r.chain_id || '/' || CAST(r.round AS VARCHAR) AS key, r.prompt_id,
       list_concat(p.messages, [{'role': 'assistant', 'content': r.revision}]) AS messages, p.split
FROM revisions r JOIN prompts p USING (prompt_id)
WHERE r.revision IS NOT NULL AND length(trim(r.revision)) > 0
ORDER BY r.chain_id, r.round
"""
# A pair decided by votes (an engine without log-probs) has no p_chosen; its soft label is then the share of votes
# for the chosen answer (``vote_chosen``, storage/014), which is 1 when every order of every principle agreed.
PREFERENCE_QUERY = """
SELECT d.pair_id || '/' || d.judge_model || '/' || d.constitution_version AS key, d.prompt_id,
       p.messages AS prompt_messages, d.chosen, d.rejected, coalesce(d.p_chosen, d.vote_chosen) AS p_chosen, p.split
FROM preference_dataset d JOIN prompts p USING (prompt_id)
ORDER BY d.prompt_id, d.pair_id, d.judge_model, d.constitution_version
"""
PROMPTS_QUERY = "SELECT prompt_id AS key, prompt_id, messages, split FROM prompts ORDER BY prompt_id"


# --- rows and their version ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataVersion:
    """Which rows a run read: a hash of the sorted set of their keys, and how many."""

    hash: str
    rows: int


def dataset_version(keys: Iterable[str]) -> DataVersion:
    unique = sorted(set(keys))
    return DataVersion(content_hash("dataset", unique, len(unique)), len(unique))


def split_of(row: dict[str, Any]) -> str:
    """The row's split as the prompts table records it (recomputed from the id for rows stored without one)."""
    return row.get("split") or PromptRow(row["prompt_id"], ()).split


def _read(store: Store, query: str, what: str, hint: str) -> list[dict[str, Any]]:
    rows = store.fetch(query)
    if not rows:
        raise ConfigError(f"{what} in {store.path} is empty; {hint}")
    for row in rows:
        row["split"] = split_of(row)
    return rows


def read_sft_rows(store: Store, *, rounds: str = "final") -> list[dict[str, Any]]:
    """``sft_dataset`` rows (key = chain_id), or with ``rounds="all"`` every round's revision."""
    hint = "generate SFT rows first (rlaif demo, or rlaif generate sft)"
    if rounds == "final":
        return _read(store, SFT_QUERY, "sft_dataset", hint)
    has_view = store.fetch("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'sft_rounds'")
    query = SFT_ROUNDS_VIEW_QUERY if has_view[0]["n"] else SFT_ROUNDS_FALLBACK_QUERY
    return _read(store, query, "sft_rounds", hint)


def read_preference_rows(store: Store) -> list[dict[str, Any]]:
    """``preference_dataset`` rows with their prompt's conversation (key = pair, judge model, constitution)."""
    return _read(store, PREFERENCE_QUERY, "preference_dataset",
                 "generate judged pairs first (rlaif demo, or rlaif generate prefs)")


def read_prompt_rows(store: Store, split: str | None = None) -> list[dict[str, Any]]:
    """Prompts (key = prompt_id) of one split, or all: the RL trainers' rollout inputs."""
    rows = _read(store, PROMPTS_QUERY, "the prompts table", "load or generate prompts first")
    return [r for r in rows if split is None or r["split"] == split]


def by_split(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, eval rows)."""
    return [r for r in rows if r["split"] != "eval"], [r for r in rows if r["split"] == "eval"]


# --- the chat template, as at generation ---------------------------------------------------------------------


def render(tokenizer: Any, messages: Sequence[dict], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                         add_generation_prompt=generation_prompt)


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered text, as the engine tokenizes its prompts (the template holds the special tokens)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(tokenizer: Any, messages: Sequence[dict]) -> list[int]:
    """The ids the transformers engine feeds the model for this conversation (``_render_chat`` + tokenize)."""
    return encode(tokenizer, render(tokenizer, messages, generation_prompt=True))


def _assistant_text(tail: str, end_of_turn: Sequence[str]) -> str:
    """The part of a rendered assistant turn the model generates: up to and including its end-of-turn token."""
    hits = [(tail.find(e), e) for e in end_of_turn if e and e in tail]
    if not hits:
        return tail
    at, token = min(hits)
    return tail[: at + len(token)]


def encode_conversation(tokenizer: Any, messages: Sequence[dict], *, end_of_turn: Sequence[str],
                        train_on: str = "last") -> tuple[list[int], list[int]]:
    """(ids, mask) of a conversation ending with an assistant turn; mask 1 on the trained assistant tokens.

    The text before each trained turn is the template's rendering of the conversation so far with the generation
    prompt, tokenized in one piece: for the last turn that is exactly the engine's prompt. A template whose
    rendering of a longer conversation does not extend the shorter one cannot be masked this way (an error).
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise ConfigError("a training conversation must end with an assistant turn")
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    trained = turns if train_on == "all" else turns[-1:]
    ids: list[int] = []
    mask: list[int] = []
    done = ""  # the rendered text already turned into ids
    for i in trained:
        before = render(tokenizer, messages[:i], generation_prompt=True)
        through = render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (before.startswith(done) and through.startswith(before)):
            raise ConfigError("the chat template does not render a conversation as a prefix of its continuation; "
                              "assistant-only loss masks need one that does")
        context = encode(tokenizer, before[len(done):])
        answer = encode(tokenizer, _assistant_text(through[len(before):], end_of_turn))
        ids += context + answer
        mask += [0] * len(context) + [1] * len(answer)
        done = before + _assistant_text(through[len(before):], end_of_turn)
    return ids, mask


def completion_ids(tokenizer: Any, prompt_messages: Sequence[dict], text: str, *,
                   end_of_turn: Sequence[str]) -> list[int]:
    """The ids of ``text`` as the assistant's answer to ``prompt_messages``, end-of-turn token included."""
    ids, mask = encode_conversation(tokenizer, [*prompt_messages, {"role": "assistant", "content": text}],
                                    end_of_turn=end_of_turn)
    return [t for t, m in zip(ids, mask) if m]


def end_of_turn_strings(tokenizer: Any, eos_ids: Sequence[int]) -> list[str]:
    """The text forms of the ids that end a reply (the engine stops generating at these)."""
    return [tokenizer.decode([i]) for i in eos_ids]


# --- examples ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SftExample:
    key: str
    ids: list[int]
    mask: list[int]  # 1 on the tokens in the loss

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class PairExample:
    key: str
    prompt: list[int]
    chosen: list[int]  # completion ids only; the sequence is prompt + chosen
    rejected: list[int]
    p_chosen: float

    @property
    def length(self) -> int:
        return len(self.prompt) + max(len(self.chosen), len(self.rejected))


def sft_examples(rows: Iterable[dict], tokenizer: Any, *, end_of_turn: Sequence[str], max_length: int,
                 train_on: str = "last") -> tuple[list[SftExample], int]:
    """Tokenized SFT rows, cut at ``max_length``; returns (examples, rows skipped with no trained token left)."""
    out, skipped = [], 0
    for row in rows:
        ids, mask = encode_conversation(tokenizer, row["messages"], end_of_turn=end_of_turn, train_on=train_on)
        ids, mask = ids[:max_length], mask[:max_length]
        if not any(mask):
            skipped += 1
            continue
        out.append(SftExample(row["key"], ids, mask))
    return out, skipped


def pair_examples(rows: Iterable[dict], tokenizer: Any, *, end_of_turn: Sequence[str],
                  max_length: int) -> tuple[list[PairExample], int]:
    """Tokenized preference rows; completions are cut to fit ``max_length`` after the prompt, and a pair whose
    prompt alone leaves no room is skipped. Returns (examples, skipped)."""
    out, skipped = [], 0
    for row in rows:
        prompt = prompt_ids(tokenizer, row["prompt_messages"])
        room = max_length - len(prompt)
        if room < 1:
            skipped += 1
            continue
        chosen = completion_ids(tokenizer, row["prompt_messages"], row["chosen"], end_of_turn=end_of_turn)
        rejected = completion_ids(tokenizer, row["prompt_messages"], row["rejected"], end_of_turn=end_of_turn)
        out.append(PairExample(row["key"], prompt, chosen[:room], rejected[:room], float(row["p_chosen"])))
    return out, skipped


# --- batches -------------------------------------------------------------------------------------------------


def batch_plan(lengths: Sequence[int], batch_size: int, *, steps: int, seed: int,
               window: int = BUCKET_WINDOW) -> list[list[int]]:
    """``steps`` global batches of exactly ``batch_size`` row indices, length-bucketed, deterministic in ``seed``.

    Epoch after epoch: shuffle, wrap around so every batch is full (the last batch borrows rows from the start of
    the same shuffled order), sort each window of ``window`` batches by length (longest first), cut, and shuffle
    the order of the batches. Rows inside a batch stay sorted longest first, so ``rank_rows`` deals similar
    lengths to every process.
    """
    n = len(lengths)
    if n < batch_size:
        raise ConfigError(f"batch_size {batch_size} exceeds the {n} training rows; lower --batch-size")
    plan: list[list[int]] = []
    epoch = 0
    while len(plan) < steps:
        rng = random.Random(content_hash("batch-plan", seed, epoch))
        order = list(range(n))
        rng.shuffle(order)
        order += order[: -n % batch_size]
        batches: list[list[int]] = []
        for start in range(0, len(order), batch_size * window):
            chunk = sorted(order[start : start + batch_size * window], key=lambda i: (-lengths[i], i))
            batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        plan += batches
        epoch += 1
    return plan[:steps]


def steps_per_epoch(rows: int, batch_size: int) -> int:
    return -(-rows // batch_size)


def rank_rows(batch: Sequence[int], rank: int, world: int) -> list[int]:
    """This process's share of a global batch: every ``world``-th row, so each share has similar lengths."""
    return list(batch[rank::world])


def chunks(items: Sequence[int], size: int) -> list[list[int]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def pad_right(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of rows padded on the right to the longest one; position ids then need no care."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        attention[i, : len(row)] = 1
    return ids, attention


def pair_batch(pairs: Sequence[PairExample], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass's tensors for pairs: the chosen sequences, then the rejected ones, padded together.

    Returns (ids, attention, loss mask), each ``[2B, T]``; the loss mask is 1 on the completion tokens.
    """
    seqs = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    masks = [[0] * len(p.prompt) + [1] * len(p.chosen) for p in pairs]
    masks += [[0] * len(p.prompt) + [1] * len(p.rejected) for p in pairs]
    ids, attention = pad_right(seqs, pad)
    loss_mask, _ = pad_right(masks, 0)
    return ids, attention, loss_mask
