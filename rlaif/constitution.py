"""Constitution files: YAML -> validated pydantic models, with ``file:line: field: message`` errors.

A constitution holds everything the model is told: the critique/revision principles of supervised CAI (Bai et al.
2022, arXiv 2212.08073, section 3: the model critiques its own answer against a principle drawn at random, then
rewrites it), the comparison questions of the AI judge (section 4.1 there; Lee et al. 2023, arXiv 2309.00267), the
few-shot exemplars placed before each request, and the templates that turn all of these into turns and prompts.
No prompt text lives in Python: this module and ``rlaif/templates.py`` only check and fill what the YAML says.

Why the care with errors: a constitution is the file users edit most, so a typo must come back as one line that
names the file, the line, the field and what was expected, never as a traceback or a pydantic dump. ruamel's
round-trip loader keeps the line of every key and item, and each pydantic error location is walked through that
tree to find its line.

``version`` is a hash of the validated content, not of the file: comments, key order and YAML formatting do not
change it, while any change to a principle, exemplar or template does. Every engine call records it.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from rlaif.engines.base import one_line
from rlaif.errors import ConfigError, ConstitutionError, TemplateError
from rlaif.judge.spec import Framing, JudgeFormats
from rlaif.resources import data_dir
from rlaif.templates import TEMPLATE_FIELDS, check_placeholders, check_template, render  # noqa: F401 (re-exported)

MAX_BYTES = 5 * 1024 * 1024  # far above any sensible constitution; refused before parsing
_MAX_NODES = 100_000  # bounds alias expansion ("billion laughs") when turning the YAML tree into plain data
_MAX_DEPTH = 32

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"

T = TypeVar("T")
# Constitution.derived's values by (version, build, args), over every constitution this process has used; the
# oldest go first past the bound. Module-level, not on the instance, so that equality stays about content.
_DERIVED: dict[tuple, Any] = {}
_DERIVED_MAX = 256
_DERIVED_LOCK = threading.Lock()


def _id() -> Any:
    return Field(pattern=ID_PATTERN, description="short name: lowercase letters, digits, '-' or '_'")


def _text() -> Any:
    return Field(min_length=1)


def _weight() -> Any:
    # strict: YAML `true` or "2" is a mistake here, not a weight
    return Field(1.0, gt=0, strict=True, description="relative chance of being drawn when one is sampled per round")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Principle(_Model):
    """One critique/revision pair: the two user turns of one SL-CAI round (Bai et al. 2022, section 3.1)."""

    id: str = _id()
    critique_request: str = Field(min_length=1, description="user turn asking to critique the last response")
    revision_request: str = Field(min_length=1, description="user turn asking to rewrite the response")
    weight: float = _weight()
    tags: list[str] = Field(default_factory=list)


class JudgePrinciple(_Model):
    """One comparison question put to the AI judge (Bai et al. 2022, section 4.1)."""

    id: str = _id()
    question: str = Field(min_length=1, description="the comparison question, e.g. which response is less harmful")
    weight: float = _weight()
    tags: list[str] = Field(default_factory=list)
    rating_question: str | None = Field(None, min_length=1, description="one-response form of the question (score)")
    statement: str | None = Field(None, min_length=1, description="what this principle prefers, said of a "
                                  "response; fills {statement} in the likelihood-contrast framings")
    contrary: str | None = Field(None, min_length=1, description="the opposite of the statement; fills {contrary}")
    framing: Framing | None = Field(None, description="likelihood-contrast framing; default judge.contrast.framing")
    baseline: Framing | None = Field(None, description="likelihood-contrast baseline; default judge.contrast.baseline")


class CritiqueExample(_Model):
    """A worked critique and revision, shown before the real conversation (few-shot prompting)."""

    prompt: str = _text()
    response: str = _text()
    principle: str = Field(description="id of the principle whose requests this exemplar answers")
    critique: str = _text()
    revision: str = _text()


class JudgeExample(_Model):
    """A worked comparison with its answer, placed before the real question in the judge prompt."""

    prompt: str = _text()
    response_a: str = _text()
    response_b: str = _text()
    principle: str = Field(description="id of the judge principle whose question this exemplar answers")
    answer: Literal["A", "B"]
    rationale: str | None = Field(None, min_length=1, description="worked reasoning, shown in chain-of-thought mode")


class FewShot(_Model):
    """Exemplars for both stages; either list may be empty."""

    critique_revision: list[CritiqueExample] = Field(default_factory=list)
    judge: list[JudgeExample] = Field(default_factory=list)


class Templates(_Model):
    """How principles, turns and exemplars become text; each may use only the placeholders in TEMPLATE_FIELDS."""

    critique: str
    revision: str
    human_turn: str
    assistant_turn: str
    judge: str
    judge_answer: str
    judge_separator: str

    @field_validator("*")
    @classmethod
    def _placeholders_allowed(cls, value: str, info: Any) -> str:
        try:
            check_template(info.field_name, value)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return value


class _Located(ValueError):
    """A cross-field error that knows which item it is about, so the loader can point at that item's line."""

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.loc = loc


class Constitution(_Model):
    """A whole constitution file. ``source`` (set by the loader) is where it came from; it is not content."""

    name: str = _text()
    description: str = ""
    system_prompt: str | None = Field(None, description="system message for the initial response; null for none")
    principles: list[Principle] = Field(min_length=1)
    judge_principles: list[JudgePrinciple] = Field(min_length=1)
    fewshot: FewShot = Field(default_factory=FewShot)
    templates: Templates
    judge: JudgeFormats = Field(default_factory=JudgeFormats, description="the judge's other prompt formats")
    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _ids_unique_and_known(self) -> Constitution:
        _check_unique(self.principles, "principles")
        _check_unique(self.judge_principles, "judge_principles")
        _check_refs(self.fewshot.critique_revision, self.principles, "critique_revision", "principles")
        _check_refs(self.fewshot.judge, self.judge_principles, "judge", "judge_principles")
        return self

    @property
    def source(self) -> Path | None:
        return self._source

    @functools.cached_property
    def version(self) -> str:
        """First 16 hex digits of the sha256 of the canonical JSON of the content (computed once: it is frozen).

        A cached property rather than a private attribute: every request reads it, and pydantic's private
        attributes are a slow lookup and part of equality (two loads of one file would differ).
        """
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Constitution:
        """A copy; one with changed fields drops the cached ``version`` (pydantic copies ``__dict__``, where the
        cached property lives), so it gets its own version and its own ``derived`` values."""
        copy = super().model_copy(update=update, deep=deep)
        if update:
            copy.__dict__.pop("version", None)
        return copy

    def derived(self, build: Callable[..., T], *args: Hashable) -> T:
        """``build(self, *args)``, computed once per constitution content and shared.

        The one home of a run's per-constitution constants: a run renders the same few-shot exemplars and builds
        the same judge guard for every request (~10-20% of an SFT run's main thread when they were rebuilt per
        pair, bench/scale.py). Keyed by ``version``, so two loads of one file share values and an edited file
        gets its own; ``args`` (e.g. an engine's special tokens) are part of the key. Values are shared: return
        tuples or frozen objects.
        """
        key = (self.version, build, *args)
        try:
            return _DERIVED[key]
        except KeyError:
            pass
        value = build(self, *args)
        with _DERIVED_LOCK:
            if key not in _DERIVED and len(_DERIVED) >= _DERIVED_MAX:
                del _DERIVED[next(iter(_DERIVED))]
            _DERIVED[key] = value
        return value

    def principle(self, id: str) -> Principle:
        return _by_id(self.principles, id, "principle", self.name)

    def judge_principle(self, id: str) -> JudgePrinciple:
        return _by_id(self.judge_principles, id, "judge principle", self.name)


def _check_unique(items: list[Principle] | list[JudgePrinciple], field: str) -> None:
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.id in first:
            raise _Located((field, i, "id"), f"duplicate id {item.id!r} (already used by {field}[{first[item.id]}])")
        first[item.id] = i


def _check_refs(examples: list[Any], principles: list[Any], field: str, target: str) -> None:
    known = [p.id for p in principles]
    for i, example in enumerate(examples):
        if example.principle not in known:
            raise _Located(
                ("fewshot", field, i, "principle"),
                f"unknown {target} id {example.principle!r}; expected one of: {', '.join(known)}",
            )


def _by_id(items: list[Any], id: str, kind: str, name: str) -> Any:
    for item in items:
        if item.id == id:
            return item
    raise ConfigError(f"constitution {name!r} has no {kind} {id!r}; expected one of: {', '.join(i.id for i in items)}")


# --- loading ---------------------------------------------------------------------------------------------------


def load_constitution(path: str | Path) -> Constitution:
    """Read, parse and validate a constitution file; every problem is one ConstitutionError line."""
    shown, p = str(path), Path(path)
    tree = _parse_yaml(_read_text(p, shown), shown)
    if not isinstance(tree, dict):
        got = "an empty file" if tree is None else _yaml_type(tree)
        expected = "a mapping (name: ..., principles: ..., templates: ...) at the top level"
        raise ConstitutionError(shown, _line_of(tree, ()) or 1, "", f"expected {expected}; got {got}")
    data = _plain(tree, shown, (), [0])
    try:
        constitution = Constitution.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, tree, shown) from None
    constitution._source = p
    return constitution


def _read_text(p: Path, shown: str) -> str:
    try:
        if not p.exists():
            raise ConstitutionError(shown, None, "", "file not found")
        if not p.is_file():
            raise ConstitutionError(shown, None, "", "not a regular file")
        size = p.stat().st_size
        if size > MAX_BYTES:
            limit = f"a constitution may be at most {MAX_BYTES:,}"
            raise ConstitutionError(shown, None, "", f"file is {size:,} bytes; {limit}")
        raw = p.read_bytes()
    except OSError as exc:
        raise ConstitutionError(shown, None, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise ConstitutionError(shown, line, "", f"not valid UTF-8 (byte 0x{bad}); save the file as UTF-8") from None


def _parse_yaml(text: str, shown: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        return YAML(typ="rt").load(text)
    except DuplicateKeyError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        key = re.search(r'duplicate key "(.*?)"', str(exc.problem or ""))
        name = f" {key.group(1)!r}" if key else ""
        raise ConstitutionError(shown, line, "", f"duplicate key{name}: each key may appear once per mapping") from None
    except MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        where = f" started at line {exc.context_mark.line + 1}" if exc.context_mark else ""
        context = f" ({exc.context}{where})" if exc.context else ""
        message = one_line(f"invalid YAML: {exc.problem}{context}", limit=None)
        raise ConstitutionError(shown, line, "", message) from None
    except (YAMLError, RecursionError) as exc:
        raise ConstitutionError(shown, None, "", one_line(f"invalid YAML: {exc}", limit=None)) from None


def _plain(node: Any, shown: str, loc: tuple[str | int, ...], count: list[int]) -> Any:
    """Copy the ruamel tree into plain dicts, lists and scalars, with a bound on size and depth."""
    count[0] += 1
    if count[0] > _MAX_NODES or len(loc) > _MAX_DEPTH:
        limits = f"more than {_MAX_NODES:,} values or {_MAX_DEPTH} levels"
        raise ConstitutionError(shown, None, "", f"too large once YAML aliases are expanded ({limits})")
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if not isinstance(key, str):
                line = node.lc.key(key)[0] + 1
                raise ConstitutionError(shown, line, _path(loc), f"keys must be text; got {_yaml_type(key)} {key!r}")
            out[str(key)] = _plain(value, shown, (*loc, key), count)
        return out
    if isinstance(node, list):
        return [_plain(v, shown, (*loc, i), count) for i, v in enumerate(node)]
    for kind in (bool, int, float, str):  # unwrap ruamel's scalar subclasses; bool before int on purpose
        if isinstance(node, kind):
            return kind(node)
    return node


# --- turning pydantic errors into one line ---------------------------------------------------------------------

_TYPE_WORDS = {
    "string_type": "should be text",
    "list_type": "should be a list",
    "model_type": "should be a mapping",
    "model_attributes_type": "should be a mapping",
    "dict_type": "should be a mapping",
    "float_type": "should be a number",
    "float_parsing": "should be a number",
}


def _first_error(exc: ValidationError, tree: Any, shown: str) -> ConstitutionError:
    """Pick the most useful of pydantic's errors: the earliest in the file, a typo before the field it misses."""
    errors = [_describe(e) for e in exc.errors()]
    extra_parents = {loc[:-1] for loc, kind, _ in errors if kind == "extra_forbidden"}
    missing: dict[tuple[str | int, ...], list[str]] = {}
    for loc, kind, _ in errors:
        if kind == "missing":
            missing.setdefault(loc[:-1], []).append(str(loc[-1]))
    ranked = []
    for loc, kind, message in errors:
        if kind == "missing" and loc[:-1] in extra_parents:
            continue  # a misspelt key explains the missing one better
        if kind == "extra_forbidden":
            message = _unknown_field(loc, missing.get(loc[:-1], []))
        ranked.append((_line_of(tree, loc), _path(loc), message))
    line, field, message = min(ranked, key=lambda r: r[0] or 0)
    return ConstitutionError(shown, line, field, one_line(message, limit=None))


def _describe(error: Any) -> tuple[tuple[str | int, ...], str, str]:
    loc, kind, ctx = tuple(error["loc"]), error["type"], error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, _Located):
        return loc + cause.loc, kind, str(cause)
    if kind == "value_error" and cause is not None:
        return loc, kind, str(cause)
    if kind in _TYPE_WORDS:
        return loc, kind, f"{_TYPE_WORDS[kind]} (got {_yaml_type(error.get('input'))})"
    if kind == "too_short" and isinstance(error.get("input"), list):
        n = ctx.get("min_length", 1)
        return loc, kind, f"needs at least {n} item{'s' * (n > 1)}; got {len(error['input']) or 'none'}"
    if kind == "string_pattern_mismatch":
        return loc, kind, f"{error.get('input')!r} should use only lowercase letters, digits, '-' and '_'"
    return loc, kind, error["msg"]


def _unknown_field(loc: tuple[str | int, ...], missing_here: list[str]) -> str:
    model = _model_at(loc[:-1])
    allowed = list(model.model_fields) if model else []
    close = difflib.get_close_matches(str(loc[-1]), missing_here or allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown field{hint}; expected one of: {', '.join(allowed)}"


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (for listing its allowed fields)."""
    annotation: Any = Constitution
    for key in loc:
        annotation = _without_none(annotation)
        if isinstance(key, int) and get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel) and key in annotation.model_fields:
            annotation = annotation.model_fields[str(key)].annotation
        else:
            return None
    annotation = _without_none(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _without_none(annotation: Any) -> Any:
    """``X`` from ``X | None`` (optional blocks such as a principle's ``framing``); anything else unchanged."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in get_args(annotation) else annotation


def _line_of(tree: Any, loc: tuple[str | int, ...]) -> int | None:
    """1-based line of the key or item at ``loc``; for a key that is absent, the line of the mapping lacking it."""
    node, line = tree, getattr(getattr(tree, "lc", None), "line", None)
    for key in loc:
        if isinstance(node, dict) and key in node:
            line, node = node.lc.key(key)[0], node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            line, node = node.lc.item(key)[0], node[key]
        else:
            break
    return None if line is None else line + 1


def _path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for key in loc:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def _yaml_type(value: Any) -> str:
    for kind, word in ((bool, "true/false"), (int, "integer"), (float, "number"), (str, "text")):
        if isinstance(value, kind):
            return word
    if value is None:
        return "an empty value"
    if hasattr(value, "tag") and not isinstance(value, (dict, list)):
        return f"a value tagged {value.tag}"
    return "mapping" if isinstance(value, dict) else "list" if isinstance(value, list) else type(value).__name__


# --- finding, describing, schema ---------------------------------------------------------------------------------


def shipped_constitutions() -> list[Path]:
    """The constitution files that ship with rlaif, sorted by name."""
    return sorted(data_dir("constitutions").glob("*.yaml"))


def resolve_constitution(name_or_path: str | Path) -> Path:
    """An existing file is itself; a bare name such as ``harmless`` or ``harmless.yaml`` is a shipped file."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    text = str(name_or_path)
    if "/" not in text and "\\" not in text:
        stem = text.removesuffix(".yaml").removesuffix(".yml")
        for shipped in shipped_constitutions():
            if shipped.stem == stem:
                return shipped
    names = ", ".join(s.stem for s in shipped_constitutions())
    raise ConfigError(f"constitution {text!r} is not a file nor a shipped constitution; shipped: {names}")


def constitution_json_schema() -> dict[str, Any]:
    """JSON Schema of the constitution format, for editors that validate YAML as you type."""
    schema = Constitution.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "rlaif constitution"
    schema["description"] = "Principles, judge questions, few-shot exemplars and templates for rlaif (YAML)."
    return schema


def describe(c: Constitution) -> str:
    """A few readable lines about ``c``: what ``rlaif constitution show`` prints."""
    shot, w = c.fewshot, max(len(p.id) for p in [*c.principles, *c.judge_principles])
    lines = [
        f"{c.name}  version {c.version}",
        f"source: {c.source or '(not loaded from a file)'}",
        *([c.description.strip()] if c.description.strip() else []),
        f"{len(c.principles)} principles, {len(c.judge_principles)} judge principles, "
        f"{len(shot.critique_revision)} critique/revision exemplars, {len(shot.judge)} judge exemplars",
        f"system prompt: {_first_line(c.system_prompt) if c.system_prompt else '(none)'}",
        "principles (critique request):",
        *(f"  {p.id:<{w}}  w={p.weight:<4g} {_first_line(p.critique_request)}" for p in c.principles),
        "judge principles (question):",
        *(f"  {p.id:<{w}}  w={p.weight:<4g} {_first_line(p.question)}" for p in c.judge_principles),
    ]
    return "\n".join(lines)


def _first_line(text: str, width: int = 80) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 3] + "..."
