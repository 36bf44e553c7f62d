"""Injection defences: what a candidate (or a prompt) may not do to the judge prompt it is placed in.

A candidate is text written by a model, or by whoever made a pair file, and it lands inside the judge's prompt.
Three things keep it from steering the verdict through the prompt's structure:

1. **Fences.** Each candidate is put between the delimiters of the constitution's ``judge.candidate`` template
   (e.g. ``<<<{text}>>>``), and every occurrence of those delimiters inside the candidate is broken apart, so a
   candidate can neither close its fence nor open a new one.
2. **Structure lines.** A line of a candidate that begins like a line of the prompt's own structure (the
   literal line heads of the judge templates, such as ``Options:``, ``(A)``, ``The answer is: (``, or the
   conversation's ``Human:``/``Assistant:`` turns) is quoted with ``> ``, so a forged ``Options:`` block reads as
   quoted text. The heads come from the constitution, never from Python.
3. **Chat special tokens.** Strings such as ``<|im_end|>`` would be read by the tokenizer as the real control
   tokens (ending the turn, opening a new one). Each is broken by a space after its first character, so it is
   tokenized as ordinary text. The list comes from the engine's tokenizer where there is one
   (``rlaif.engines.base.special_tokens_of``), else the documented default list there.

The same guard applies to the conversation's text (it is untrusted too); fences are only for candidates.
"""

from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass

from rlaif.constitution import Constitution, render
from rlaif.engines.base import special_tokens_of

QUOTE = "> "  # prefix of a candidate line that would otherwise read as the prompt's structure
MAX_PASSES = 16  # breaking one occurrence can never create another, but loops stay bounded anyway


def break_token(text: str, token: str) -> str:
    """``text`` with every occurrence of ``token`` broken by a space after its first character."""
    if len(token) < 2:
        return text
    broken = token[0] + " " + token[1:]
    for _ in range(MAX_PASSES):
        if token not in text:
            return text
        text = text.replace(token, broken)
    return text.replace(token, "")  # unreachable for real tokens; never leave one in


def quote_structure(text: str, heads: tuple[str, ...]) -> str:
    """Quote each line of ``text`` that starts (after spaces) with one of the prompt's structure ``heads``."""
    if not heads:
        return text
    lines = text.split("\n")
    return "\n".join(QUOTE + line if line.lstrip().startswith(heads) else line for line in lines)


def fence_delimiters(candidate_template: str | None) -> tuple[str, ...]:
    """The opening and closing delimiters around ``{text}`` in the candidate template (empty without one)."""
    if not candidate_template:
        return ()
    before, _, after = candidate_template.partition("{text}")
    return tuple(d for d in (before.strip(), after.strip()) if d)


def structure_heads(constitution: Constitution) -> tuple[str, ...]:
    """The literal start of every line of the judge's templates, up to the first placeholder (2+ characters)."""
    t, j = constitution.templates, constitution.judge
    texts = [t.judge, t.human_turn, t.assistant_turn, *(x for x in (j.cot, j.cot_answer, j.score) if x)]
    heads: list[str] = []
    for text in texts:
        for line in text.split("\n"):
            literal = next(iter(string.Formatter().parse(line)), ("", None, None, None))[0].strip()
            if len(literal) >= 2 and literal not in heads:
                heads.append(literal)
    return tuple(heads)


@dataclass(frozen=True)
class Guard:
    """The defences for one constitution and one engine's special tokens."""

    special_tokens: tuple[str, ...]
    delimiters: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    fence: str | None = None  # the candidate template, or None when the constitution has none

    @classmethod
    def build(cls, constitution: Constitution, special_tokens: tuple[str, ...]) -> Guard:
        fence = constitution.judge.candidate
        return cls(tuple(special_tokens), fence_delimiters(fence), structure_heads(constitution), fence)

    @functools.cached_property
    def _longest_first(self) -> tuple[str, ...]:
        # Longest first, so a token that contains another is broken whole.
        return tuple(sorted(self.special_tokens, key=len, reverse=True))

    def tokens(self, text: str) -> str:
        """Special tokens neutralised: for text that goes into a chat turn (contrast mode, rationales)."""
        for token in self._longest_first:
            text = break_token(text, token)
        return text

    @functools.cached_property
    def _any_head(self) -> re.Pattern[str] | None:
        # One search finds the texts (most) that contain no head at all, so no line of them can start with one.
        return re.compile("|".join(map(re.escape, self.heads))) if self.heads else None

    def text(self, text: str) -> str:
        """Untrusted text in a raw judge prompt: special tokens, fence delimiters and structure lines defused."""
        text = self.tokens(text)
        for delimiter in self.delimiters:
            text = break_token(text, delimiter)
        if self._any_head is None or not self._any_head.search(text):
            return text
        return quote_structure(text, self.heads)

    def candidate(self, text: str) -> str:
        """A candidate for a raw judge prompt: defused as ``text``, then fenced."""
        safe = self.text(text)
        return render(self.fence, text=safe) if self.fence else safe


def guard_for(engine: object, constitution: Constitution) -> Guard:
    """The defences for this constitution and ``engine``'s chat special tokens (the default list for ``None``),
    built once per constitution and token list: every prompt of a run uses the same guard."""
    return constitution.derived(Guard.build, special_tokens_of(engine))
