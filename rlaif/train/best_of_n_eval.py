"""Best-of-N as an evaluation baseline: its answers against the base policy's, judged like a trained policy's.

``rlaif eval winrate`` puts a trained checkpoint against its base on held-out prompts. Best-of-N has no
checkpoint: its "policy" is the base model plus a reward and N samples. So this module gives it the same
evaluation with the answers swapped in: on the same held-out prompts, with the same sampling options and the
same per-prompt seeds as ``run_winrate`` gives the base, the base answers once (shared with any evaluation of
the same base, through the stored generations) and best-of-N answers with the best of N samples; the evaluation
role judges each pair (``settings.eval``, as ``run_winrate`` does, with its warning when the judge is the base
or a labeller: a judge that is also the best-of-N reward picks and grades alike), and the result is a
``winrate_evals`` row whose ``policy`` is ``best-of-n:N:<reward>:<base>``. The ``policy_comparison`` view shows
it beside the PPO and DPO evaluations.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rlaif.engines.base import SamplingParams, content_hash
from rlaif.errors import ConfigError

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.train.evaluate import WinRateOptions
    from rlaif.train.rewards import CombinedReward


def baseline_name(n: int, reward_spec: str, base: str) -> str:
    return f"best-of-n:{n}:{reward_spec}:{base}"


def evaluate_best_of_n(settings: Settings, *, prompts: str, n: int, reward: CombinedReward, reward_spec: str,
                       base: str | None = None, options: WinRateOptions | None = None,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Best-of-``n`` against the base on the held-out prompts of ``prompts``; returns the ``winrate_evals`` row."""
    from rlaif.constitution import load_constitution, resolve_constitution
    from rlaif.runner import open_store
    from rlaif.train import evaluate as ev

    options = options or ev.WinRateOptions()
    base_model = base or settings.policy.model
    rows = ev._select_prompts(ev.read_source_prompts(prompts, db=settings.db), options)
    constitution = load_constitution(resolve_constitution(options.constitution))
    store = open_store(settings)
    params = SamplingParams(temperature=options.temperature, top_p=options.top_p, max_tokens=options.max_tokens)
    policy = baseline_name(n, reward_spec, base_model)
    eval_id = content_hash("winrate", policy, base_model, *ev.judge_identity(settings), [r.prompt_id for r in rows],
                           params, options.seed, constitution.version)
    stored = store.fetch("SELECT * FROM winrate_evals WHERE eval_id = ?", [eval_id])
    if stored:
        log(f"evaluation {eval_id} is stored already")
        return stored[0]
    best = _best_answers(settings, store, rows, n, reward, reward_spec, base_model, options, log)
    # the reward's judge chose the answers: grading them with it again counts as grading its own labels
    pickers = [str(getattr(s, "model", "") or "") for s, _ in getattr(reward, "sources", ())]
    check = ev.announce_judge(settings, store, base_model, log, also=pickers)
    run_id = ev._open_run(store, options, policy, base_model, prompts, constitution, settings.eval.engine,  # type: ignore
                          ev._judge_model(settings), None)
    try:
        report = _judge(settings, store, run_id, eval_id, rows, best, params, options, constitution, policy,
                        base_model, prompts, log)
        report.update(check.columns())
        store.write({"winrate_evals": [report]})
    except BaseException as exc:
        ev._close_run(store, run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    ev._close_run(store, run_id, "completed")
    return report


def _best_answers(settings: Settings, store: Any, rows: Sequence[Any], n: int, reward: CombinedReward,
                  reward_spec: str, base_model: str, options: WinRateOptions,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """prompt_id -> the best-of-N answer (a ``Completion``), through ``run_best_of_n`` and its stored rows."""
    from rlaif.engines.base import Completion
    from rlaif.train import evaluate as ev
    from rlaif.train.best_of_n import BestOfNOptions, run_best_of_n, selection_id

    bon = BestOfNOptions(n=n, max_tokens=options.max_tokens, temperature=options.temperature, top_p=options.top_p,
                         seed=options.seed, split="all")
    engine = ev._answer_engine(settings, base_model, options)
    run_best_of_n(store, engine, rows, reward, options=bon, reward_spec=reward_spec, log=log)
    ids = [selection_id(r.prompt_id, bon, reward_spec, engine.model) for r in rows]
    found = store.fetch("SELECT prompt_id, chosen_key, chosen FROM best_of_n WHERE selection_id IN (SELECT unnest(?))",
                        [ids])
    return {r["prompt_id"]: Completion(key=r["chosen_key"], model=engine.model, text=r["chosen"]) for r in found}


def _judge(settings: Settings, store: Any, run_id: str, eval_id: str, rows: Sequence[Any], best: dict[str, Any],
           params: SamplingParams, options: WinRateOptions, constitution: Any, policy: str, base_model: str,
           source: str, log: Callable[[str], None]) -> dict[str, Any]:
    """The base's answers (as ``run_winrate`` draws them), then the judge on (best-of-N, base)."""
    from rlaif.recording import RecordingEngine
    from rlaif.store import Writer, utcnow
    from rlaif.train import evaluate as ev
    from rlaif.train.winrate import summarise

    with Writer(store, max_rows=256, max_age_s=2.0) as writer:
        engine = RecordingEngine(ev._answer_engine(settings, base_model, options), writer, run_id=run_id,
                                 constitution_version=constitution.version)
        engine.preload(store, [r.prompt_id for r in rows])
        base_answers = asyncio.run(ev._answer_all(engine, rows, params, options.seed, "base"))
        judge = RecordingEngine(ev._judge_engine(settings), writer, run_id=run_id,
                                constitution_version=constitution.version)
        judge.preload(store, [r.prompt_id for r in rows])
        pairs = [(r, best[r.prompt_id], b) for r, b in zip(rows, base_answers) if b and r.prompt_id in best]
        verdicts = asyncio.run(ev._judge_all(judge, constitution, pairs, options.seed, ev._judge_config(settings)))
    judged = [(row, a, b, v) for (row, a, b), v in zip(pairs, verdicts) if v.p_a is not None]
    if not judged:
        raise ConfigError(f"no prompt could be judged ({len(rows)} prompts, {len(pairs)} answered by both)")
    stats = summarise([v.p_a for *_, v in judged], [len(a.text) for _, a, _, _ in judged],
                      [len(b.text) for _, _, b, _ in judged], seed=options.seed)
    now = utcnow()
    report = {"eval_id": eval_id, "run_id": run_id, "policy": policy, "base": base_model,
              "judge_model": judge.model, "constitution_version": constitution.version, "prompts_source": source,
              "split": options.split, "params": json.dumps({**options.model_dump(), "best_of_n": policy}),
              "seed": options.seed, "created_at": now, **ev._stats_columns(stats)}
    store.write({"winrate_judgements": [ev._judgement_row(eval_id, row, a, b, v, now) for row, a, b, v in judged]})
    log(f"{policy}: win rate {report['win_rate']:.3f} against {base_model} on {len(judged)} prompts")
    return report
