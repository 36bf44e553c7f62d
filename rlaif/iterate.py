"""The closed loop: generate with the current policy, judge, train, evaluate, and again with the new policy.

Iteration i (1-based) runs three steps:
1. **generate**: the SFT flow with its judge step (``rlaif.runner.generate_sft``, ``judge=True``) with the policy
   role set to the current policy. Its (original, revision) pairs, judged, land in
   ``preference_dataset``; its revisions in ``sft_dataset``.
2. **train**: DPO from the training issue's trainer (``rlaif.train.runner.run_train``) on ``preference_dataset``,
   or RL (``ppo``/``grpo``, ``rlaif.train.rl_runner``) on the prompts with the given rewards, starting from the
   current policy, into ``OUT/iter-<i>``. The current policy is also DPO's reference and RL's KL anchor, as in
   iterative DPO (Self-Rewarding LMs, Yuan et al. 2024, arXiv 2401.10020). Kept from them: each iteration starts
   from the last. Changed: DPO reads every pair stored so far (earlier iterations' too), since the training
   layer reads the whole view; the pairs of the newest policy are added to, not substituted for, the older ones.
3. **evaluate**: the new policy's win rate against the policy it started from and against the loop's base model
   (``rlaif.train.evaluate.run_winrate``: held-out prompts, judged); in iteration 1 the two
   comparisons are the same one. The judge of these evaluations, and the RL monitor's, is the evaluation role
   (``settings.eval``, or ``judge_model`` / ``judge_mode`` here), not the feedback role that labelled the pairs:
   a loop judged by its own labeller only measures how well it learned that labeller (docs/training.md, "Who
   judges"); ``run_winrate`` warns and records it when that is so.

With ``judge_role="policy"`` the feedback role (critic, reviser and judge) is the current policy too, the
self-rewarding set-up the roadmap points to; by default it is the configured feedback model.

Every step is a row in ``iteration_steps`` with its output; a rerun of the same loop (``loop_id`` hashes its
options and base model) skips completed steps and reruns the first one that is not, which itself resumes from what
it stored (generation from its rows, training from its checkpoint, evaluation from its stored calls).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlaif.engines.base import content_hash
from rlaif.errors import ConfigError

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.store import Store

STEPS = ("generate", "train", "evaluate")
IN_PROCESS = ("transformers", "vllm", "fake")  # engines that can load each iteration's checkpoint folder


class IterateOptions(BaseModel):
    """What one closed loop does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: str = Field(..., description="prompt source generated from (and evaluated on: its eval split)")
    out: str = Field(..., description="folder of the loop's checkpoints: OUT/iter-<i>")
    iterations: int = Field(2, ge=1, le=100, description="iterations to run (a rerun may raise it)")
    trainer: Literal["dpo", "ppo", "grpo"] = Field("dpo", description="dpo | ppo | grpo")
    rewards: tuple[str, ...] = Field((), description="reward specs of ppo/grpo (rm:CKPT, judge, rule:mod:fn)")
    model: str | None = Field(None, description="base policy (default: the policy role's model)")
    judge_role: Literal["feedback", "policy"] = Field("feedback", description="who critiques and judges")
    constitution: str = Field("harmless", description="constitution of generation, judging and evaluation")
    limit: int | None = Field(None, ge=1, description="prompts generated per iteration")
    rounds: int = Field(1, ge=1, le=16, description="critique/revision rounds")
    max_tokens: int = Field(160, ge=1, le=32768, description="tokens per generated turn")
    seed: int = Field(0, ge=0, description="seed of generation, training and evaluation")
    train: dict[str, Any] = Field(default_factory=dict, description="trainer options (max_steps, lr, ...)")
    eval: dict[str, Any] = Field(default_factory=dict, description="win-rate options (limit, max_tokens, ...)")
    judge_model: str | None = Field(None, description="judge of the evaluations and the RL monitor (the eval role)")
    judge_mode: Literal["choice", "cot", "score", "contrast"] | None = Field(
        None, description="its mode (default: what `rlaif judge eval` chose for its engine)")

    @model_validator(mode="after")
    def _rewards_for_rl(self) -> IterateOptions:
        if self.trainer != "dpo" and not self.rewards:
            raise ValueError(f"trainer {self.trainer} needs at least one --reward")
        if self.trainer == "dpo" and self.rewards:
            raise ValueError("--reward is for ppo/grpo; DPO learns from the judged pairs")
        return self

    def identity(self) -> dict[str, Any]:
        """What defines the loop: everything but how many iterations to run (a judge left unset is left out, so
        loops from before the judge options keep their ids)."""
        unset = {k for k in ("judge_model", "judge_mode") if getattr(self, k) is None}
        return self.model_dump(mode="json", exclude={"iterations", *unset})


def loop_id(options: IterateOptions, base_model: str) -> str:
    return "loop-" + content_hash("iterate", options.identity(), base_model, length=16)


# --- records -------------------------------------------------------------------------------------------------


def open_loop(store: Store, options: IterateOptions, base_model: str) -> str:
    """Insert the loop's row, or reopen it (raising its planned iterations to ``options.iterations``)."""
    from rlaif.store import utcnow

    lid = loop_id(options, base_model)
    store.insert("iterate_loops", [{"loop_id": lid, "base_model": base_model, "iterations": options.iterations,
                                    "config": json.dumps(options.model_dump(mode="json")), "out_dir": options.out,
                                    "status": "running", "started_at": utcnow(), "finished_at": None,
                                    "error": None}])
    with store.connect() as con:
        con.execute("UPDATE iterate_loops SET status = 'running', error = NULL, finished_at = NULL, "
                    "iterations = greatest(iterations, ?) WHERE loop_id = ?", [options.iterations, lid])
    return lid


def close_loop(store: Store, lid: str, status: str, error: str | None = None) -> None:
    from rlaif.store import utcnow

    with store.connect() as con:
        con.execute("UPDATE iterate_loops SET status = ?, finished_at = ?, error = ? WHERE loop_id = ?",
                    [status, utcnow(), error, lid])


def step_output(store: Store, lid: str, iteration: int, step: str) -> dict[str, Any] | None:
    """The stored output of a completed step, or None when it has not completed."""
    rows = store.fetch("SELECT output FROM iteration_steps WHERE loop_id = ? AND iteration = ? AND step = ? "
                       "AND status = 'completed'", [lid, iteration, step])
    return json.loads(rows[0]["output"]) if rows else None


def _mark_step(store: Store, lid: str, iteration: int, step: str, status: str, output: dict | None = None,
               error: str | None = None) -> None:
    from rlaif.store import utcnow

    now = utcnow()
    with store.connect() as con:
        con.execute(
            "INSERT INTO iteration_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (loop_id, iteration, step) "
            "DO UPDATE SET status = excluded.status, output = excluded.output, error = excluded.error, "
            "finished_at = excluded.finished_at",
            [lid, iteration, step, status, json.dumps(output) if output is not None else None, now,
             now if status != "running" else None, error])


def policy_before(store: Store, lid: str, iteration: int, base_model: str) -> str:
    """The policy iteration ``iteration`` starts from: the base, or the previous iteration's trained model."""
    if iteration == 1:
        return base_model
    trained = step_output(store, lid, iteration - 1, "train")
    if trained is None:
        raise ConfigError(f"iteration {iteration - 1} of {lid} has no trained model; run the loop from there")
    return str(trained["final_path"])


def record_iteration(store: Store, lid: str, iteration: int, options: IterateOptions, before: str) -> None:
    """The ``iterations`` row from its steps' outputs (written again as each step completes)."""
    from rlaif.store import utcnow

    gen, train, ev = (step_output(store, lid, iteration, s) or {} for s in STEPS)
    done = bool(ev)
    with store.connect() as con:
        con.execute(
            "INSERT OR REPLACE INTO iterations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "coalesce((SELECT started_at FROM iterations WHERE loop_id = ? AND iteration = ?), ?), ?)",
            [lid, iteration, before, train.get("final_path"), options.trainer, gen.get("run_id"), train.get("run_id"),
             ev.get("win_rate_vs_previous"), ev.get("win_rate_vs_base"), ev.get("eval_previous_id"),
             ev.get("eval_base_id"), "completed" if done else "running", lid, iteration, utcnow(),
             utcnow() if done else None])


# --- the steps -----------------------------------------------------------------------------------------------


def role_settings(settings: Settings, policy: str, judge_role: str) -> Settings:
    """``settings`` with the policy role (and, for ``judge_role="policy"``, the feedback role) on ``policy``."""
    roles = {r: dict(v) for r, v in settings.roles.items()}
    for role in ("policy", "feedback") if judge_role == "policy" else ("policy",):
        engine = settings.role(role).engine
        if engine not in IN_PROCESS:
            raise ConfigError(f"the {role} role's engine is {engine}; the loop loads each iteration's checkpoint "
                              f"in process: use one of {', '.join(IN_PROCESS)}")
        roles[role] = {**roles.get(role, {}), "model": policy}
    return settings.model_copy(update={"roles": roles})


def generate_step(settings: Settings, options: IterateOptions, policy: str, log: Callable[[str], None]) -> dict:
    from rlaif.options import RunOptions
    from rlaif.runner import generate_sft

    run_options = RunOptions.parse(prompts=options.prompts, judge=True, rounds=options.rounds,
                                   max_tokens=options.max_tokens, limit=options.limit,
                                   constitution=options.constitution, seed=options.seed)
    summary = generate_sft(role_settings(settings, policy, options.judge_role), run_options, show_progress=False,
                           log=log)
    return {"run_id": summary.run_id, "comparisons": summary.comparisons, "revisions": summary.revisions}


def train_step(settings: Settings, options: IterateOptions, policy: str, iteration: int,
               log: Callable[[str], None]) -> dict:
    out = Path(options.out) / f"iter-{iteration}"
    values = {"seed": options.seed, **options.train}
    if options.trainer == "dpo":
        from rlaif.train.runner import run_train

        result = run_train(settings, "dpo", out=out, model=policy, options=values, log=log)
    else:
        from rlaif.train.rl_runner import run_rl_command

        result = run_rl_command(settings, options.trainer, out=out, model=policy, rewards=options.rewards,
                                options=values, prompts=options.prompts, constitution=options.constitution,
                                log=log)
    if not result.final_path:
        raise ConfigError(f"iteration {iteration}: training produced no model")
    return {"run_id": result.run_id, "final_path": str(result.final_path)}


def evaluate_step(settings: Settings, options: IterateOptions, policy: str, trained: str, base_model: str,
                  log: Callable[[str], None]) -> dict:
    from rlaif.train.evaluate import WinRateOptions, run_winrate
    from rlaif.train.options import parse_options

    eval_options = parse_options(WinRateOptions, {"seed": options.seed, "constitution": options.constitution,
                                                  **options.eval})
    previous = run_winrate(settings, policy=trained, prompts=options.prompts, base=policy, options=eval_options,
                           log=log)
    base = previous if policy == base_model else run_winrate(settings, policy=trained, prompts=options.prompts,
                                                              base=base_model, options=eval_options, log=log)
    return {"eval_previous_id": previous["eval_id"], "win_rate_vs_previous": previous["win_rate"],
            "eval_base_id": base["eval_id"], "win_rate_vs_base": base["win_rate"]}


def run_step(settings: Settings, store: Store, options: IterateOptions, lid: str, iteration: int, step: str,
             base_model: str, log: Callable[[str], None] = print) -> dict:
    """Run one step of one iteration unless it completed before; record it; returns its output."""
    settings = settings.with_role("eval", model=options.judge_model, mode=options.judge_mode)
    done = step_output(store, lid, iteration, step)
    before = policy_before(store, lid, iteration, base_model)
    if done is not None:
        log(f"iteration {iteration} {step}: done before")
        return done
    _mark_step(store, lid, iteration, step, "running")
    record_iteration(store, lid, iteration, options, before)
    try:
        if step == "generate":
            output = generate_step(settings, options, before, log)
        elif step == "train":
            output = train_step(settings, options, before, iteration, log)
        else:
            trained = step_output(store, lid, iteration, "train") or {}
            output = evaluate_step(settings, options, before, trained["final_path"], base_model, log)
    except BaseException as exc:
        _mark_step(store, lid, iteration, step, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    _mark_step(store, lid, iteration, step, "completed", output)
    record_iteration(store, lid, iteration, options, before)
    log(f"iteration {iteration} {step}: " + ", ".join(f"{k} {v}" for k, v in output.items()))
    return output


def run_iterate(settings: Settings, options: IterateOptions, *, log: Callable[[str], None] = print) -> list[dict]:
    """The whole loop without Prefect (``--no-prefect``, tests); returns the ``iterations`` rows."""
    from rlaif.runner import open_store

    store = open_store(settings)
    base_model = options.model or settings.policy.model
    lid = open_loop(store, options, base_model)
    try:
        for iteration in range(1, options.iterations + 1):
            for step in STEPS:
                run_step(settings, store, options, lid, iteration, step, base_model, log)
    except BaseException as exc:
        close_loop(store, lid, "failed", f"{type(exc).__name__}: {exc}"[:500])
        raise
    close_loop(store, lid, "completed")
    return iterations(store, lid)


def iterations(store: Store, lid: str) -> list[dict]:
    return store.fetch("SELECT * FROM iterations WHERE loop_id = ? ORDER BY iteration", [lid])
