"""Who judges a trained policy: the evaluation role, and whether that judge is also the judged.

A policy trained on AI labels and then graded by the same model that made the labels, or by the model it was
trained from, measures agreement with itself: reward hacking of the labeller scores as a win, and a judge that
prefers its own style prefers the base (the circularity Gao et al. 2023, arXiv 2210.10760, warn of for proxy
rewards; AlpacaEval and MT-Bench use a judge outside the compared models for the same reason). The evaluation role
(``settings.eval``: ``RLAIF_EVAL_*``, ``[eval]`` in ``rlaif.toml``, ``--judge-model`` / ``--judge-mode``) names
the judge of ``eval winrate``, ``iterate``'s evaluation, best-of-N's comparison and the RL monitor.
``check_judge`` says whether it is the policy's base or a model that labelled the data; the commands print one
warning line and store the two facts with the result. They do not refuse: on one small machine the embedded model
may be the only judge there is, and a figure known to be circular is still worth keeping, marked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.judge.config import JudgeConfig
    from rlaif.store import Store


def _identity(model: str) -> str:
    """A model's comparable name: a folder's resolved path, else the name as given (lowercased)."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model.strip().lower()


def same_model(a: str | None, b: str | None) -> bool:
    """Whether two model names or folders denote one model: equal identities, or a served name and the folder
    of that name (``SmolLM2-135M-Instruct`` and ``~/.cache/rlaif/models/SmolLM2-135M-Instruct``)."""
    if not a or not b:
        return False
    if _identity(a) == _identity(b):
        return True
    fa, fb = Path(a).expanduser(), Path(b).expanduser()
    if fa.is_dir() != fb.is_dir():  # one is a folder: compare its name with the other, a served name
        folder, name = (fa, b) if fa.is_dir() else (fb, a)
        return folder.resolve().name.lower() == name.strip().lower()
    return False


@dataclass(frozen=True)
class JudgeCheck:
    """The evaluation judge and what it has to do with the evaluated models."""

    model: str
    engine: str
    mode: str
    is_base: bool
    is_labeller: bool

    @property
    def warning(self) -> str | None:
        """One line when the judge is not independent of what it judges, else None."""
        roles = [r for r, hit in (("the policy's base model", self.is_base),
                                  ("the model that labelled its training data", self.is_labeller)) if hit]
        if not roles:
            return None
        return (f"warning: the judge {self.model} is {' and '.join(roles)}: it grades its own preferences; "
                "set another with --judge-model or RLAIF_EVAL_MODEL (docs/training.md, 'Who judges')")

    def columns(self) -> dict[str, Any]:
        """The ``winrate_evals`` columns (storage/012_judge_roles.sql)."""
        return {"judge_engine": self.engine, "judge_mode": self.mode, "judge_is_base": self.is_base,
                "judge_is_labeller": self.is_labeller, "judge_warning": self.warning}


def check_judge(settings: Settings, *, base: str | None, labellers: Iterable[str]) -> JudgeCheck:
    """The evaluation role held against the policy's ``base`` and the models that labelled its data."""
    role = settings.eval
    return JudgeCheck(role.model, role.engine, role.judge_mode(), same_model(role.model, base),
                      any(same_model(role.model, m) for m in labellers))


def labellers(settings: Settings, store: Store | None = None) -> list[str]:
    """Models that labelled training data: the feedback role (critic, reviser, judge and the judge reward), and
    every model that wrote revisions or comparisons into ``store``."""
    found = [settings.feedback.model]
    if store is not None:
        for sql in ("SELECT DISTINCT model AS m FROM revisions", "SELECT DISTINCT judge_model AS m FROM comparisons"):
            try:
                found += [r["m"] for r in store.fetch(sql) if r["m"]]
            except Exception:  # noqa: BLE001 - a database without those tables has no labellers to name
                continue
    return sorted(set(found))


def eval_judge_config(settings: Settings) -> JudgeConfig:
    """The judge options of the evaluation role: the documented ones in its mode."""
    from rlaif.judge.config import JudgeConfig, default_config

    mode = settings.eval.judge_mode()
    config = default_config(settings.eval.engine)
    return config if config.mode == mode else JudgeConfig(mode=mode)  # type: ignore[arg-type]
