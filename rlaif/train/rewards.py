"""Rewards for RL and best-of-N: a reward model, the AI judge's direct score, a user's rule function, weighted.

A reward is named on the command line by a spec, optionally with a weight after ``@``:

- ``rm:CKPT``: a reward model trained by ``rlaif train rm`` (a scalar head on a causal LM). Its reward is
  normalised, mean 0 and std 1 on the reward model's reference set, with the statistics saved beside it.
- ``judge``: the feedback role's AI judge scoring each answer directly, 1-10, as the expectation over the score
  tokens' probabilities (d-RLAIF, Lee et al. 2023, arXiv 2309.00267, section 2.4). The expectation is mapped
  linearly from [1, 10] onto [-1, 1], the range d-RLAIF normalises its scores to.
- ``rule:module:function``: a Python function, as the rule-based rewards of DeepSeek-R1 (arXiv 2501.12948,
  section 2.2.2). ``module`` is imported from the current directory or from the installed packages. Its
  signature (the batched form TRL's GRPO reward functions use)::

      def function(prompts: list[str], completions: list[str], **info) -> list[float | None]

  ``prompts[i]`` is the last user turn answered by ``completions[i]``; ``info`` holds ``messages`` (each
  conversation as a list of ``{"role", "content"}`` dicts), ``prompt_ids`` and ``ended`` (whether each
  completion emitted its end-of-sequence token). Return one finite number per completion, or None for one it
  cannot score. Accept ``**info`` so that keys added later do not break the function.

Several specs are summed with their weights: ``--reward rm:out/rm@1 --reward rule:checks:is_polite@0.5``.
Each source's value for each response is kept (``RewardScores.by_source``) so the caller records it per rollout.
A response a source could not score (a judge parse failure, a rule returning None) takes that source's mean over
the scored responses of the batch (0 when none was scored), so it neither gains nor loses against its group, and
its stored value stays NULL.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from rlaif.errors import ConfigError

SPEC_HELP = "rm:CKPT | judge | rule:module:function, optionally @WEIGHT (e.g. rule:checks:polite@0.5)"


@dataclass(frozen=True)
class RewardSpec:
    """One reward source as named on the command line."""

    kind: Literal["rm", "judge", "rule"]
    target: str = ""  # the checkpoint folder (rm) or "module:function" (rule)
    weight: float = 1.0

    @property
    def source(self) -> str:
        """The source's name in ``rollout_rewards.source``."""
        return f"{self.kind}:{self.target}" if self.target else self.kind

    def __str__(self) -> str:
        return self.source if self.weight == 1.0 else f"{self.source}@{self.weight:g}"


def parse_reward_spec(text: str) -> RewardSpec:
    """``rm:CKPT``, ``judge`` or ``rule:module:function``, with an optional ``@WEIGHT``; bad input is one line."""
    body, weight = _split_weight(text.strip())
    kind, _, target = body.partition(":")
    if kind == "judge" and not target:
        return RewardSpec("judge", "", weight)
    if kind == "rm" and target:
        return RewardSpec("rm", target, weight)
    if kind == "rule" and target.count(":") == 1 and all(target.split(":")):
        return RewardSpec("rule", target, weight)
    raise ConfigError(f"--reward {text!r}: expected {SPEC_HELP}")


def _split_weight(text: str) -> tuple[str, float]:
    body, at, tail = text.rpartition("@")
    if not at:
        return text, 1.0
    try:
        weight = float(tail)
    except ValueError:
        return text, 1.0  # an '@' inside a path, not a weight
    if not math.isfinite(weight):
        raise ConfigError(f"--reward {text!r}: the weight after @ must be a finite number, got {tail!r}")
    return body, weight


def parse_reward_specs(texts: Sequence[str]) -> list[RewardSpec]:
    specs = [parse_reward_spec(t) for t in texts]
    if not specs:
        raise ConfigError(f"give at least one --reward: {SPEC_HELP}")
    sources = [s.source for s in specs]
    if len(set(sources)) != len(sources):
        raise ConfigError(f"--reward names a source twice: {', '.join(sources)}")
    return specs


# --- what a source scores ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardBatch:
    """Responses to score: ``messages[i]`` is the conversation answered by ``responses[i]``."""

    messages: Sequence[Sequence[dict]]
    responses: Sequence[str]
    prompt_ids: Sequence[str]
    ended: Sequence[bool]

    def __len__(self) -> int:
        return len(self.responses)

    @property
    def prompts(self) -> list[str]:
        """The last user turn of each conversation."""
        return [next((m["content"] for m in reversed(c) if m["role"] == "user"), "") for c in self.messages]


@dataclass
class SourceScores:
    """One source's rewards for a batch: ``values[i]`` is None where it could not score (``details`` says why)."""

    values: list[float | None]
    details: list[str | None]


class RewardSource(Protocol):
    source: str

    def score(self, batch: RewardBatch) -> SourceScores: ...


@dataclass
class RewardScores:
    """The combined reward per response and each source's own values (for ``rollout_rewards``)."""

    total: list[float]
    by_source: dict[str, SourceScores]
    weights: dict[str, float] = field(default_factory=dict)

    def rows(self, keys: Sequence[str], run_id: str, now: Any) -> list[dict]:
        """``rollout_rewards`` rows: one per (response key, source)."""
        return [
            {"key": key, "source": source, "value": scores.values[i], "weight": self.weights[source],
             "detail": scores.details[i], "run_id": run_id, "created_at": now}
            for source, scores in self.by_source.items() for i, key in enumerate(keys)
        ]


class CombinedReward:
    """sum_s w_s * r_s over the sources; a missing value takes the source's batch mean (module docstring)."""

    def __init__(self, sources: Sequence[tuple[RewardSource, float]]):
        if not sources:
            raise ConfigError(f"give at least one --reward: {SPEC_HELP}")
        self.sources = list(sources)

    @property
    def source(self) -> str:
        return " + ".join(f"{w:g}*{s.source}" for s, w in self.sources)

    @contextlib.contextmanager
    def recorded_in(self, writer: Any, run_id: str, *extra: Any) -> Iterator[None]:
        """Every source (and each of ``extra``, e.g. the RL monitor's judge) that calls an engine records its
        calls as rows of ``run_id`` through the run's ``writer`` while the block runs: every engine call is a row."""
        with contextlib.ExitStack() as stack:
            for src in (*(s for s, _ in self.sources), *(e for e in extra if e is not None)):
                hook = getattr(src, "recorded_in", None)
                if hook is not None:
                    stack.enter_context(hook(writer, run_id))
            yield

    def score(self, batch: RewardBatch) -> RewardScores:
        total = [0.0] * len(batch)
        by_source: dict[str, SourceScores] = {}
        for src, weight in self.sources:
            scores = src.score(batch)
            if len(scores.values) != len(batch):
                raise ConfigError(f"reward {src.source} returned {len(scores.values)} values for {len(batch)} "
                                  "responses; return one per completion")
            by_source[src.source] = scores
            for i, value in enumerate(fill_missing(scores.values)):
                total[i] += weight * value
        return RewardScores(total, by_source, {s.source: w for s, w in self.sources})


def fill_missing(values: Sequence[float | None]) -> list[float]:
    """None -> the mean of the values given (0.0 when there is none)."""
    given = [v for v in values if v is not None]
    mean = sum(given) / len(given) if given else 0.0
    return [mean if v is None else float(v) for v in values]


# --- rule functions ------------------------------------------------------------------------------------------


def load_rule(target: str) -> Callable[..., Any]:
    """Import ``module:function`` from the current directory or the installed packages."""
    module_name, _, function_name = target.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"rule:{target}: cannot import module {module_name!r} from {cwd} or the installed "
                          f"packages ({exc})") from None
    except Exception as exc:  # the module's own top-level code failed
        raise ConfigError(f"rule:{target}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    finally:
        if added:
            sys.path.remove(cwd)
    fn = getattr(module, function_name, None)
    if not callable(fn):
        found = getattr(module, "__file__", module_name)
        raise ConfigError(f"rule:{target}: {found} has no function {function_name!r}")
    return fn


class RuleReward:
    """A user's function ``f(prompts, completions, **info) -> list[float | None]`` (module docstring)."""

    def __init__(self, target: str, fn: Callable[..., Any] | None = None):
        self.source = f"rule:{target}"
        self.fn = fn or load_rule(target)
        self._check_signature()

    def _check_signature(self) -> None:
        try:
            sig = inspect.signature(self.fn)
            sig.bind([], [], messages=[], prompt_ids=[], ended=[])
        except TypeError:
            raise ConfigError(f"{self.source}: expected def f(prompts, completions, **info) -> list[float], "
                              f"got {self.fn.__name__}{inspect.signature(self.fn)}") from None
        except ValueError:
            return  # a builtin without a signature: call it and see

    def score(self, batch: RewardBatch) -> SourceScores:
        try:
            out = self.fn(batch.prompts, list(batch.responses), messages=[list(m) for m in batch.messages],
                          prompt_ids=list(batch.prompt_ids), ended=list(batch.ended))
        except Exception as exc:
            raise ConfigError(f"{self.source} raised {type(exc).__name__}: {exc}") from None
        return SourceScores(*_check_values(self.source, out, len(batch)))


def _check_values(source: str, out: Any, n: int) -> tuple[list[float | None], list[str | None]]:
    try:
        values = list(out)
    except TypeError:
        raise ConfigError(f"{source} returned {type(out).__name__}; expected a list of {n} numbers") from None
    if len(values) != n:
        raise ConfigError(f"{source} returned {len(values)} values for {n} completions; expected one each")
    clean: list[float | None] = []
    details: list[str | None] = []
    for i, v in enumerate(values):
        if v is None:
            clean.append(None)
            details.append("the rule returned None")
            continue
        try:
            number = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{source} returned {v!r} for completion {i}; expected a number or None") from None
        if not math.isfinite(number):
            raise ConfigError(f"{source} returned {number} for completion {i}; expected a finite number")
        clean.append(number)
        details.append(None)
    return clean, details


# --- building sources from specs -----------------------------------------------------------------------------


def build_reward(specs: Sequence[RewardSpec], *, judge: Callable[[], RewardSource] | None = None,
                 rm_device: Any = None) -> CombinedReward:
    """The combined reward of ``specs``; ``judge`` builds the judge source when a spec asks for it."""
    sources: list[tuple[RewardSource, float]] = []
    for spec in specs:
        if spec.kind == "rule":
            sources.append((RuleReward(spec.target), spec.weight))
        elif spec.kind == "rm":
            from rlaif.train.reward_sources import RewardModelReward

            sources.append((RewardModelReward(Path(spec.target), device=rm_device), spec.weight))
        else:
            if judge is None:
                raise ConfigError("the judge reward needs a feedback engine; none was configured here")
            sources.append((judge(), spec.weight))
    return CombinedReward(sources)
