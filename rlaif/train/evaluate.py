"""``rlaif eval winrate``: a trained policy against its base on held-out prompts, judged by the evaluation role.

1. The prompts of a source whose split is ``eval`` (the prompt hash decides, as everywhere: prompts a model was
   trained on are never the ones it is evaluated on).
2. The base and the policy answer each prompt with the same sampling options and the same per-prompt seed
   (``derive_seed(seed, prompt_id, "winrate")``), one model after the other on an in-process engine.
3. The evaluation role (``settings.eval``, ``--judge-model`` / ``--judge-mode``; ``rlaif.train.judge_role``)
   judges each (policy, base) pair with the project's judge in that role's mode (the choice modes average both
   orders to cancel position bias, Lee et al. 2023, section 2.1.1; contrast has no order): p = P(policy better).
   When that judge is the base model or a model that labelled the training data, one warning line says so and
   the row stores it (``judge_is_base``, ``judge_is_labeller``, ``judge_warning``).
4. ``rlaif.train.winrate`` turns the p's and the answers' lengths into the win rate with its 95% interval and the
   length-controlled win rate (Dubois et al. 2024); one row in ``winrate_evals`` and one per prompt in
   ``winrate_judgements``.

Every engine call goes through ``RecordingEngine`` under one ``runs`` row (kind ``eval-winrate``), so a rerun after
a crash answers stored calls from the database, and an evaluation already stored is reported, not repeated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from rlaif.engines.base import ChatRequest, SamplingParams, chat_key, content_hash
from rlaif.errors import ConfigError
from rlaif.stages import derive_seed

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.constitution import Constitution
    from rlaif.engines.base import Engine
    from rlaif.judge.config import JudgeConfig
    from rlaif.prompts import PromptRow
    from rlaif.stages.judge import Verdict
    from rlaif.store import Store

IN_PROCESS_ENGINES = ("transformers", "vllm")  # engines that load a checkpoint folder themselves


class WinRateOptions(BaseModel):
    """Options of one win-rate evaluation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(256, ge=1, le=8192, description="tokens per answer")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature of both models")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    seed: int = Field(0, description="per-prompt seeds derive from it; both models get the same ones")
    limit: int | None = Field(None, ge=1, description="evaluate at most this many prompts")
    split: str = Field("eval", pattern="^(eval|all)$", description="eval: held-out prompts only; all: every prompt")
    constitution: str = Field("harmless", description="constitution whose judge principles are used")
    answer_engine: str | None = Field(None, description="in-process engine for both models: transformers | vllm")


def read_source_prompts(source: str, *, prompt_column: str = "prompt", db: Path | None = None) -> list[PromptRow]:
    """The prompts of any prompt source (``rlaif.sources``: JSONL, CSV, Parquet, text, datasets folders, SQL).

    A bad row stops the evaluation with its ``FILE:ROW: column ...`` line before any model is loaded.
    """
    from rlaif.sources import read_prompts

    return list(read_prompts(source, prompt_column=prompt_column, db=db))


def resolve_policy(path: str | Path) -> Path:
    """A servable model folder: the folder itself, or a training output folder's ``final``."""
    from rlaif.models import is_model_folder

    folder = Path(path).expanduser()
    for candidate in (folder, folder / "final"):
        if candidate.is_dir() and is_model_folder(candidate):
            return candidate.resolve()
    raise ConfigError(f"{path}: not a model folder (config.json, model.safetensors and a tokenizer), "
                      "nor a training output folder with final/ inside")


def base_of(policy: Path, base: str | None) -> str:
    if base:
        return base
    from rlaif.train.models import read_train_meta

    recorded = read_train_meta(policy).get("base_model")
    if not recorded:
        raise ConfigError(f"{policy} does not record the model it was trained from; pass --base")
    return str(recorded)


def run_winrate(settings: Settings, *, policy: str | Path, prompts: str, base: str | None = None,
                options: WinRateOptions | None = None, prompt_column: str = "prompt",
                log: Callable[[str], None] = print, prefect_flow_run_id: str | None = None) -> dict[str, Any]:
    """Evaluate ``policy`` against ``base`` on ``prompts``; returns the stored ``winrate_evals`` row."""
    from rlaif.constitution import load_constitution, resolve_constitution
    from rlaif.runner import open_store

    options = options or WinRateOptions()
    policy_path = resolve_policy(policy)
    base_model = base_of(policy_path, base)
    rows = _select_prompts(read_source_prompts(prompts, prompt_column=prompt_column, db=settings.db), options)
    constitution = load_constitution(resolve_constitution(options.constitution))
    store = open_store(settings)
    params = SamplingParams(temperature=options.temperature, top_p=options.top_p, max_tokens=options.max_tokens)
    eval_id = content_hash("winrate", str(policy_path), base_model, *judge_identity(settings),
                           [r.prompt_id for r in rows], params, options.seed, constitution.version)
    stored = store.fetch("SELECT * FROM winrate_evals WHERE eval_id = ?", [eval_id])
    if stored:
        log(f"evaluation {eval_id} is stored already")
        return stored[0]
    check = announce_judge(settings, store, base_model, log)
    run_id = _open_run(store, options, policy_path, base_model, prompts, constitution, settings.eval.engine,
                       _judge_model(settings), prefect_flow_run_id)
    try:
        report = _evaluate(settings, store, run_id, eval_id, rows, params, options, constitution, policy_path,
                           base_model, prompts, log)
        report.update(check.columns())
        store.write({"winrate_evals": [report]})
    except BaseException as exc:
        _close_run(store, run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    _close_run(store, run_id, "completed")
    from rlaif.train.model_card import write_model_card

    write_model_card(store, policy_path)  # the card of a folder rlaif trained shows its new win rate
    return report


def _select_prompts(rows: Sequence[PromptRow], options: WinRateOptions) -> list[PromptRow]:
    chosen = [r for r in rows if options.split == "all" or r.split == "eval"]
    if not chosen:
        raise ConfigError(f"none of the {len(rows)} prompts is in the eval split (10% of prompts by hash); "
                          "use more prompts or --split all")
    return chosen[: options.limit] if options.limit else chosen


def _evaluate(settings: Settings, store: Store, run_id: str, eval_id: str, rows: list[PromptRow],
              params: SamplingParams, options: WinRateOptions, constitution: Constitution, policy: Path, base: str,
              source: str, log: Callable[[str], None]) -> dict[str, Any]:
    from rlaif.recording import RecordingEngine
    from rlaif.store import Writer, utcnow
    from rlaif.train.winrate import summarise

    with Writer(store, max_rows=256, max_age_s=2.0) as writer:
        answers = {}
        for role, model in (("base", base), ("policy", str(policy))):
            engine = RecordingEngine(_answer_engine(settings, model, options), writer, run_id=run_id,
                                     constitution_version=constitution.version)
            engine.preload(store, [r.prompt_id for r in rows])
            answers[role] = asyncio.run(_answer_all(engine, rows, params, options.seed, role))
            log(f"{role} answered {sum(a is not None for a in answers[role])} of {len(rows)} prompts")
        judge_engine = _judge_engine(settings)  # loaded after the answering models are closed
        judge = RecordingEngine(judge_engine, writer, run_id=run_id, constitution_version=constitution.version)
        judge.preload(store, [r.prompt_id for r in rows])
        pairs = [(r, a, b) for r, a, b in zip(rows, answers["policy"], answers["base"]) if a and b]
        verdicts = asyncio.run(_judge_all(judge, constitution, pairs, options.seed, _judge_config(settings)))
    judged = [(row, a, b, v) for (row, a, b), v in zip(pairs, verdicts) if v.p_a is not None]
    if not judged:
        raise ConfigError(f"no prompt could be judged ({len(rows)} prompts, {len(pairs)} answered by both)")
    p = [v.p_a for *_, v in judged]
    stats = summarise(p, [len(a.text) for _, a, _, _ in judged], [len(b.text) for _, _, b, _ in judged],
                      seed=options.seed)
    now = utcnow()
    report = {"eval_id": eval_id, "run_id": run_id, "policy": str(policy), "base": base,
              "judge_model": judge_engine.model, "constitution_version": constitution.version,
              "prompts_source": source, "split": options.split, "params": json.dumps(options.model_dump()),
              "seed": options.seed, "created_at": now, **_stats_columns(stats)}
    judgements = [_judgement_row(eval_id, row, a, b, v, now) for row, a, b, v in judged]
    store.write({"winrate_judgements": judgements})  # the evaluation's own row follows, with the judge check
    return report


async def _answer_all(engine: Any, rows: Sequence[PromptRow], params: SamplingParams, seed: int,
                      role: str) -> list[Any]:
    """Both models answer with the same options and per-prompt seeds; a failed answer is None."""
    async def one(row: PromptRow) -> Any:
        seeded = dataclasses.replace(params, seed=derive_seed(seed, row.prompt_id, "winrate"))
        messages = tuple(dict(m) for m in row.messages)
        result = await engine.chat(ChatRequest(chat_key(messages, seeded, engine.model), messages, seeded,
                                               f"eval_{role}", row.prompt_id))
        return result if result.ok else None

    try:
        return list(await asyncio.gather(*(one(r) for r in rows)))
    finally:
        await engine.aclose()


async def _judge_all(engine: Any, constitution: Constitution, pairs: Sequence[tuple], seed: int,
                     config: JudgeConfig | None = None) -> list[Verdict]:
    try:
        return list(await asyncio.gather(*(judge_answers(engine, constitution, row, a.text, b.text, seed, config)
                                           for row, a, b in pairs)))
    finally:
        await engine.aclose()


async def judge_answers(engine: Any, constitution: Constitution, row: PromptRow, policy_text: str, base_text: str,
                        seed: int, config: JudgeConfig | None = None) -> Verdict:
    """The judge's debiased verdict on (policy answer, base answer): the one call into the judge stage.

    The judge runs in ``config``'s mode: the evaluation role's, by default the engine's measured default mode
    (``rlaif.judge.config.default_config``, what ``rlaif judge eval`` chose), under one principle drawn for the
    pair; the verdict is turned back to (policy, base) order.
    """
    from rlaif.judge.config import default_config
    from rlaif.judge.pairing import Candidate, Pair
    from rlaif.stages.judge import judge

    pair = Pair.make(row.prompt_id, row.messages, Candidate(policy_text, "policy"), Candidate(base_text, "base"))
    judgement = await judge(engine, constitution, pair, config=config or default_config(engine.name),
                            run_seed=seed)
    (verdict,) = judgement.verdicts
    return verdict.swapped() if pair.swapped else verdict


def _answer_engine(settings: Settings, model: str, options: WinRateOptions) -> Engine:
    """An in-process engine for ``model`` (a checkpoint folder must be loaded, so never a remote one)."""
    from rlaif.engines import create_engine

    name = options.answer_engine or (settings.engine if settings.engine in IN_PROCESS_ENGINES else "transformers")
    if name not in IN_PROCESS_ENGINES:
        raise ConfigError(f"answer engine {name!r}: expected one of {', '.join(IN_PROCESS_ENGINES)}")
    return create_engine(settings.model_copy(update={"model": model, "engine": name}), role="policy")


def _judge_engine(settings: Settings) -> Engine:
    """The evaluation role's engine: the judge of win rates."""
    from rlaif.engines import create_engine

    return create_engine(settings, role="eval")


def _judge_model(settings: Settings) -> str:
    return settings.eval.model


def _judge_config(settings: Settings) -> JudgeConfig:
    from rlaif.train.judge_role import eval_judge_config

    return eval_judge_config(settings)


def judge_identity(settings: Settings) -> tuple[str, str, str]:
    """What an evaluation's id holds of its judge: model, engine and mode (another judge, another evaluation)."""
    return settings.eval.model, settings.eval.engine, settings.eval.judge_mode()


def announce_judge(settings: Settings, store: Store, base: str, log: Callable[[str], None],
                   also: Sequence[str] = ()) -> Any:
    """The evaluation judge checked against the base and the data's labellers (and ``also``); its warning line,
    if any, logged."""
    from rlaif.train.judge_role import check_judge, labellers

    check = check_judge(settings, base=base, labellers=[*labellers(settings, store), *also])
    log(f"judge: {check.model} ({check.engine}, mode {check.mode})")
    if check.warning:
        log(check.warning)
    return check


def _open_run(store: Store, options: WinRateOptions, policy: Path, base: str, source: str,
              constitution: Constitution, judge_engine: str, judge_model: str, prefect_flow_run_id: str | None) -> str:
    """The ``runs`` row the evaluation's engine calls are recorded under (one place for the run-record API)."""
    import json

    from rlaif.runs import new_run_id
    from rlaif.store import utcnow

    run_id = new_run_id()
    params = {**options.model_dump(), "policy": str(policy), "base": base, "prompts": source}
    # the row names the judge; the answers name their own models
    store.upsert_run({"run_id": run_id, "kind": "eval-winrate", "status": "running",
                      "params": json.dumps(params, default=str), "constitution_name": constitution.name,
                      "constitution_version": constitution.version, "engine": judge_engine, "model": judge_model,
                      "seed": options.seed, "started_at": utcnow(), "finished_at": None,
                      "prefect_flow_run_id": prefect_flow_run_id, "error": None})
    return run_id


def _close_run(store: Store, run_id: str, status: str, error: str | None = None) -> None:
    from rlaif.runs import finish_run

    finish_run(store, run_id, status, error)


def _stats_columns(stats: Any) -> dict[str, Any]:
    columns = {k: v for k, v in asdict(stats).items() if k != "fit"}
    columns.update(glm_intercept=stats.fit.intercept, glm_length_coef=stats.fit.length_coef,
                   length_scale=stats.fit.scale)
    return columns


def _judgement_row(eval_id: str, row: PromptRow, a: Any, b: Any, v: Verdict, now: Any) -> dict[str, Any]:
    return {"eval_id": eval_id, "prompt_id": row.prompt_id, "principle_id": v.principle_id, "policy_output": a.text,
            "base_output": b.text, "policy_key": a.key, "base_key": b.key, "p_policy_ab": v.p_a_ab,
            "p_policy_ba": v.p_a_ba, "p_policy": v.p_a, "consistent": v.consistent, "len_policy": len(a.text),
            "len_base": len(b.text), "created_at": now}
