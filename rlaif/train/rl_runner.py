"""What ``rlaif train ppo|grpo`` and ``rlaif best-of-n`` run: options, rewards and prompts in, one library call.

The commands hand over what the user typed (None for options left out); this module validates it into
``RlOptions`` / ``BestOfNOptions``, resolves the base model and the reward specs (an ``rm:`` path becomes
absolute, so the run's identity does not depend on the working directory), builds the reward sources (the judge
from the feedback role; the monitor's judge from the evaluation role), reads the prompts (a prompt source, or the
database's prompts table) and calls ``rlaif.train.rl.run_rl`` or ``rlaif.train.best_of_n.run_best_of_n``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlaif.errors import ConfigError
from rlaif.train.rewards import RewardSpec, parse_reward_specs

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.prompts import PromptRow
    from rlaif.train.rewards import CombinedReward, RewardSource

GROUPS = ("rollout", "update", "kl")


def nested_options(values: dict[str, Any]) -> dict[str, Any]:
    """Drop options left out (None), in the groups too, so the defaults (per estimator) apply."""
    out = {k: v for k, v in values.items() if v is not None and k not in GROUPS}
    for group in GROUPS:
        given = {k: v for k, v in (values.get(group) or {}).items() if v is not None}
        if given:
            out[group] = given
    return out


def resolve_specs(texts: Sequence[str]) -> list[RewardSpec]:
    """Parsed reward specs; a reward model's path is made absolute and must exist."""
    out = []
    for spec in parse_reward_specs(texts):
        if spec.kind == "rm":
            path = Path(spec.target).expanduser().resolve()
            if not path.is_dir():
                raise ConfigError(f"--reward rm:{spec.target}: no such folder (give a reward model trained by "
                                  "rlaif train rm, or its --out folder)")
            spec = RewardSpec("rm", str(path), spec.weight)
        out.append(spec)
    return out


def prompt_rows(settings: Settings, store: Any, source: str | None) -> list[dict] | None:
    """The prompts of ``source`` as training rows, stored in the prompts table first; None: the table's own."""
    if source is None:
        return None
    rows = read_source(source, settings)
    store.insert("prompts", [r.as_row() for r in rows])
    return [{"key": r.prompt_id, "prompt_id": r.prompt_id, "messages": [dict(m) for m in r.messages],
             "split": r.split} for r in rows]


def read_source(source: str, settings: Settings) -> list[PromptRow]:
    from rlaif.sources import read_prompts

    rows = [r for r in read_prompts(source, db=settings.db) if hasattr(r, "prompt_id")]
    if not rows:
        raise ConfigError(f"{source}: no prompts")
    return rows


def judge_factory(settings: Settings, constitution: str, role: str = "feedback") -> Callable[[], RewardSource]:
    """Builds the judge reward (``role``'s engine: feedback for the reward, eval for the monitor) once, when a spec
    or the monitor asks for it."""
    built: list[RewardSource] = []

    def make() -> RewardSource:
        if not built:
            from rlaif.train.judge_reward import judge_reward

            built.append(judge_reward(settings, constitution, role=role))
        return built[0]

    return make


def build_rewards(settings: Settings, specs: Sequence[RewardSpec], judge: Callable[[], RewardSource]
                  ) -> CombinedReward:
    from rlaif.train.rewards import build_reward

    return build_reward(specs, judge=judge, rm_device=settings.device)


def run_rl_command(settings: Settings, estimator: str, *, out: Path, model: str | None, rewards: Sequence[str],
                   options: dict[str, Any], prompts: str | None = None, constitution: str = "harmless",
                   monitor_judge: bool = True, log: Callable[[str], None] = print,
                   rollout_url: str | None = None) -> Any:
    """``rlaif train ppo|grpo``: validate, build the rewards, train; returns ``rlaif.train.rl.RlResult``.

    Under ``accelerate launch`` only rank 0 opens the database and builds the rewards (it alone samples and
    scores, ``rlaif.train.rl_dist``); the others get a store they never touch and the reward's name only.
    """
    from rlaif.store import Store
    from rlaif.train.models import base_model_path
    from rlaif.train.options import parse_options
    from rlaif.train.rl import run_rl
    from rlaif.train.rl_options import RlOptions
    from rlaif.train.runner import is_main_process

    specs = resolve_specs(rewards)
    opts = parse_options(RlOptions, {**nested_options(options), "estimator": estimator,
                                     "rewards": tuple(str(s) for s in specs)})
    base_model = model or settings.policy.model
    base_path = base_model_path(base_model, settings.cache_dir)
    if not is_main_process():
        return run_rl(Store(settings.db), options=opts, reward=_Unscored(" + ".join(map(str, specs))),
                      base_model=base_model, base_path=base_path, out_dir=out, device=settings.device, log=log,
                      rollout_url=rollout_url)
    from rlaif.runner import open_store

    store = open_store(settings)
    rows = prompt_rows(settings, store, prompts)
    reward = build_rewards(settings, specs, judge_factory(settings, constitution))
    monitor = _monitor_judge(settings, constitution, reward) if monitor_judge and opts.monitor_prompts else None
    return run_rl(store, options=opts, reward=reward, base_model=base_model, base_path=base_path, out_dir=out,
                  device=settings.device, judge=monitor, prompt_rows=rows, log=log, rollout_url=rollout_url)


class _Unscored:
    """The reward as a process other than rank 0 holds it: a name; rank 0 scores and broadcasts the totals."""

    def __init__(self, source: str):
        self.source = source

    def score(self, batch: Any) -> Any:
        raise RuntimeError("only rank 0 scores rollouts")


def _monitor_judge(settings: Settings, constitution: str, reward: CombinedReward) -> RewardSource:
    """The monitor's judge, the evaluation role's, refused when it is the reward itself (before any training)."""
    from rlaif.config import ROLE_FIELDS
    from rlaif.train.judge_reward import judge_reward
    from rlaif.train.overopt import refuse_self_comparison

    same = settings.eval.model_dump(include=set(ROLE_FIELDS)) == settings.feedback.model_dump()
    reward_judge = next((s for s, _ in reward.sources if s.source == "judge"), None)
    engine = getattr(getattr(reward_judge, "score_many", None), "engine", None) if same else None
    judge = judge_reward(settings, constitution, role="eval", engine=engine)  # one model loaded when it is one
    refuse_self_comparison(reward, judge)
    return judge


def run_best_of_n_command(settings: Settings, *, rewards: Sequence[str], options: dict[str, Any],
                          prompts: str | None = None, constitution: str = "harmless",
                          log: Callable[[str], None] = print) -> Any:
    """``rlaif best-of-n``: the policy role samples, the rewards rank; returns the run's summary."""
    from rlaif.engines import create_engine
    from rlaif.runner import open_store
    from rlaif.train.best_of_n import BestOfNOptions, run_best_of_n
    from rlaif.train.options import parse_options

    specs = resolve_specs(rewards)
    opts = parse_options(BestOfNOptions, options)  # type: ignore[arg-type]
    store = open_store(settings)
    rows = read_source(prompts, settings) if prompts else _stored_prompts(store)
    reward = build_rewards(settings, specs, judge_factory(settings, constitution))
    engine = create_engine(settings, role="policy")
    return run_best_of_n(store, engine, rows, reward, options=opts, reward_spec=" + ".join(map(str, specs)), log=log)


def _stored_prompts(store: Any) -> list[PromptRow]:
    from rlaif.prompts import PromptRow

    rows = store.fetch("SELECT prompt_id, messages, source FROM prompts ORDER BY prompt_id")
    if not rows:
        raise ConfigError(f"no prompts in {store.path}; give --prompts SRC")
    return [PromptRow(r["prompt_id"], tuple(dict(m) for m in r["messages"]), r["source"] or "") for r in rows]


def run_best_of_n_eval_command(settings: Settings, *, rewards: Sequence[str], n: int, prompts: str,
                               base: str | None, options: dict[str, Any], constitution: str = "harmless",
                               log: Callable[[str], None] = print) -> list[dict]:
    """``rlaif eval best-of-n``: best-of-N against the base; returns ``policy_comparison`` for that base."""
    from rlaif.runner import open_store
    from rlaif.train.best_of_n_eval import evaluate_best_of_n
    from rlaif.train.evaluate import WinRateOptions
    from rlaif.train.options import parse_options

    specs = resolve_specs(rewards)
    opts = parse_options(WinRateOptions, {"constitution": constitution, **options})  # type: ignore[arg-type]
    reward = build_rewards(settings, specs, judge_factory(settings, opts.constitution))
    report = evaluate_best_of_n(settings, prompts=prompts, n=n, reward=reward,
                                reward_spec=" + ".join(map(str, specs)), base=base, options=opts, log=log)
    return open_store(settings).fetch("SELECT method, policy, win_rate, win_rate_low, win_rate_high, lc_win_rate, "
                                      "prompts FROM policy_comparison WHERE base = ? ORDER BY created_at",
                                      [report["base"]])
