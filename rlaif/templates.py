"""Prompt templates: which placeholders each constitution template takes, checking them, and filling them in.

Templates are ``str.format``-style text with plain ``{name}`` placeholders only (no index, attribute, conversion
or format spec), so a typo is caught when the constitution loads (``TemplateError``, which the loader turns into
a ``file:line`` error) rather than as a ``KeyError`` in the middle of a run. ``render`` fills them piecewise, so
braces inside the values (code in a prompt, JSON in an answer) come through as they are. ``rlaif.constitution``
re-exports these names.
"""

from __future__ import annotations

import functools
import string

from rlaif.errors import TemplateError

# For each template: (placeholders it must use, placeholders it may use).
TEMPLATE_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "critique": (frozenset({"critique_request"}), frozenset({"critique_request"})),
    "revision": (frozenset({"revision_request"}), frozenset({"revision_request", "critique"})),
    "human_turn": (frozenset({"content"}), frozenset({"content"})),
    "assistant_turn": (frozenset({"content"}), frozenset({"content"})),
    "judge": (
        frozenset({"conversation", "question", "response_a", "response_b"}),
        frozenset({"conversation", "question", "response_a", "response_b"}),
    ),
    "judge_answer": (frozenset({"answer"}), frozenset({"answer"})),
    "judge_separator": (frozenset(), frozenset()),
}


def _fields(template: str) -> list[str]:
    """The placeholder names in ``template``, in order; only plain ``{name}`` forms are accepted."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"bad braces ({exc}); write literal braces as {{{{ and }}}}") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if not name.isidentifier():
            raise TemplateError(f"placeholder {shown} must be a plain name (no index, attribute or position)")
        if spec or conversion:
            raise TemplateError(f"placeholder {shown} may not have a conversion or format spec")
        names.append(name)
    return names


def check_template(name: str, text: str) -> None:
    """Raise TemplateError if template ``name`` uses a placeholder it may not, or lacks one it must have."""
    required, allowed = TEMPLATE_FIELDS[name]
    check_placeholders(text, required, allowed)
    if name == "judge":
        rendered = render(text, **{f: "x" for f in allowed})
        if not rendered.endswith("("):
            # The judge reads the log-probs of "A" / "B" as the very next token, so nothing may follow the "(".
            raise TemplateError(
                f"must end with '(' (e.g. 'The answer is: (') so the next token is the answer letter; it ends with "
                f"{rendered[-20:]!r} (in YAML, '|-' drops the final newline that '|' keeps)"
            )


def check_placeholders(text: str, required: frozenset[str], allowed: frozenset[str]) -> None:
    """Raise TemplateError if ``text`` uses a placeholder outside ``allowed`` or lacks one of ``required``."""
    used = _fields(text)
    for field in used:
        if field not in allowed:
            hint = f"allowed: {', '.join(sorted(allowed))}" if allowed else "this template takes no placeholders"
            raise TemplateError(f"unknown placeholder {{{field}}}; {hint} (write literal braces as {{{{ }}}})")
    missing = sorted(required - set(used))
    if missing:
        raise TemplateError(f"missing placeholder {{{missing[0]}}}; this template needs {_names(required)}")


def _names(fields: frozenset[str] | set[str]) -> str:
    return ", ".join("{" + f + "}" for f in sorted(fields))


def render(template: str, **values: str) -> str:
    """Fill ``template``'s placeholders from ``values`` (extra values are ignored).

    The output is built piecewise, never formatted twice, so braces inside the values come through untouched.
    """
    pieces, names = _parsed(template)
    missing = {f for f in names if f not in values}
    if missing:
        raise TemplateError(f"template needs {_names(missing)}; got {', '.join(sorted(values)) or 'nothing'}")
    return "".join(literal + (str(values[name]) if name is not None else "") for literal, name in pieces)


@functools.lru_cache(maxsize=512)
def _parsed(template: str) -> tuple[tuple[tuple[str, str | None], ...], tuple[str, ...]]:
    """A template's (literal, placeholder) pieces and its placeholder names, parsed once: a run renders the same
    few templates for every request."""
    names = tuple(_fields(template))
    return tuple((literal, name) for literal, name, _, _ in string.Formatter().parse(template)), names
