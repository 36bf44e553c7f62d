"""Prompt rows: content-hash ids, deterministic splits, and the shipped demo prompt set.

A prompt's id is the hash of its conversation, so the same prompt from two sources is one row, and its split
(train/eval) follows from the id alone: no state, no order dependence, the same on every rerun.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlaif.engines.base import Message, content_hash
from rlaif.resources import package_file

EVAL_FRACTION_PERCENT = 10  # prompts whose id falls in the first 10% of the hash space are held out


@dataclass(frozen=True)
class PromptRow:
    """One prompt: ``messages`` is the conversation the assistant answers (ending with a user turn).

    ``helpful`` marks a prompt whose answer is kept unrevised (the paper mixes such helpfulness samples into its
    SFT set). It is not part of ``prompt_id``: the id is the conversation's content hash alone.
    """

    prompt_id: str
    messages: tuple[Message, ...]
    source: str = ""
    category: str | None = None
    helpful: bool = False

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]

    @property
    def split(self) -> str:
        return "eval" if int(self.prompt_id[:8], 16) % 100 < EVAL_FRACTION_PERCENT else "train"

    def as_row(self) -> dict:
        """The ``prompts`` table row."""
        from rlaif.store import utcnow  # here, not at the top: rlaif.store loads duckdb

        return {
            "prompt_id": self.prompt_id, "text": self.text, "messages": [dict(m) for m in self.messages],
            "source": self.source, "split": self.split, "created_at": utcnow(),
        }


def make_prompt(text_or_messages: str | list[Message], source: str = "", category: str | None = None,
                helpful: bool = False) -> PromptRow:
    """Build a prompt row from a plain string or a conversation (only each turn's role and content are kept)."""
    if isinstance(text_or_messages, str):
        messages: tuple[Message, ...] = ({"role": "user", "content": text_or_messages},)
    else:
        messages = tuple({"role": m["role"], "content": m["content"]} for m in text_or_messages)
    return PromptRow(content_hash("prompt", list(messages)), messages, source, category, helpful)


def demo_prompts_path() -> Path:
    return package_file("data", "demo_prompts.jsonl")


def load_prompts(path: Path | None = None, *, limit: int | None = None) -> list[PromptRow]:
    """The first ``limit`` prompts of a JSONL file (the shipped demo set by default), duplicates collapsed.

    A thin wrapper over ``rlaif.sources.read_prompts`` for callers that want a list. In the demo set, rows whose
    ``category`` is ``helpful`` come out ``helpful=True``: the demo keeps its helpfulness prompts' answers
    unrevised. Other files are read with the defaults (column ``prompt`` or ``messages``, none helpful).
    """
    from rlaif.sources import read_prompts

    demo = path is None or Path(path).resolve() == demo_prompts_path().resolve()
    return list(read_prompts(path or demo_prompts_path(), helpful_column="category" if demo else None, limit=limit))
