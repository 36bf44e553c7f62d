"""The critique-revise-judge pipeline over many prompts, with every row written to DuckDB as it completes.

Each prompt runs its own chain (respond -> N critique/revision rounds -> judge original vs. final revision in
both orders) as one asyncio task, and many prompts are in flight at once. So prompt A's revision can be on the
engine while prompt B's first answer still is: the engine sees a continuous stream, never a batch waiting on its
slowest member, and no stage barrier leaves it idle. The stages stay pure; this module only schedules them and
hands their results to the writer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Sequence

from rlaif.engines.base import Engine, SamplingParams, content_hash
from rlaif.recording import RecordingEngine
from rlaif.stages import derive_seed
from rlaif.stages.critique_revise import Round, clean_output, critique_revise
from rlaif.stages.judge import Verdict, draw_judge_principle, judge_pair, pair_id
from rlaif.stages.respond import respond

if TYPE_CHECKING:
    from rlaif.constitution import Constitution
    from rlaif.prompts import PromptRow
    from rlaif.store import Store, Writer


@dataclass(frozen=True)
class CaiConfig:
    """Options of one critique-revise-judge run (the stage config; infrastructure lives in Settings)."""

    rounds: int = 1  # critique/revision rounds per prompt
    max_tokens: int = 160  # per generated turn
    temperature: float = 0.7
    top_p: float = 0.95
    judge: bool = True  # judge original vs. final revision in both orders
    ignore_eos: bool = False  # benchmarks only: every generated turn runs to exactly max_tokens tokens

    def __post_init__(self) -> None:
        from rlaif.errors import ConfigError

        if not 1 <= self.rounds <= 16:
            raise ConfigError(f"rounds must be between 1 and 16, got {self.rounds}")
        if not 1 <= self.max_tokens <= 8192:
            raise ConfigError(f"max_tokens must be between 1 and 8192, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(f"temperature must be between 0 and 2, got {self.temperature}")

    def params(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                              ignore_eos=self.ignore_eos)


@dataclass
class RunSummary:
    """What a run did, printed at its end and returned by the flow."""

    run_id: str
    prompts: int = 0
    responses: int = 0
    revisions: int = 0
    comparisons: int = 0
    failed_prompts: int = 0  # an engine call failed for good; the next run retries it
    empty_outputs: int = 0  # the model returned nothing; kept as data (NULL), not retried
    engine_calls: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    reused: int = 0  # results answered from the database instead of the engine
    errors: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "tokens_per_s": round(self.tokens_per_s, 1)}


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def chain_id(prompt_id: str, constitution_version: str, model: str, run_seed: int, config: CaiConfig) -> str:
    return content_hash("chain", prompt_id, constitution_version, model, run_seed, config.params())


def start_run(store: "Store", *, run_id: str, kind: str, params: dict, constitution: "Constitution",
              engine: Engine, seed: int, prefect_flow_run_id: str | None = None) -> None:
    store.upsert_run({
        "run_id": run_id, "kind": kind, "status": "running", "params": json.dumps(params, default=str),
        "constitution_name": constitution.name, "constitution_version": constitution.version,
        "engine": engine.name, "model": engine.model, "seed": seed, "started_at": datetime.now(timezone.utc),
        "finished_at": None, "prefect_flow_run_id": prefect_flow_run_id, "error": None,
    })


def finish_run(store: "Store", run_id: str, status: str, error: str | None = None) -> None:
    store.upsert_run({"run_id": run_id, "status": status, "finished_at": datetime.now(timezone.utc), "error": error})


async def run_cai(
    prompts: Sequence["PromptRow"],
    engine: Engine,
    constitution: "Constitution",
    store: "Store",
    writer: "Writer",
    *,
    run_id: str,
    config: CaiConfig,
    run_seed: int,
    window: int = 256,
    on_prompt_done: Callable[[int], None] | None = None,
) -> RunSummary:
    """Run the chain for every prompt, ``window`` prompts in flight; rows go to ``writer`` as they complete.

    ``on_prompt_done(tokens_so_far)`` is called as each prompt's chain ends (for progress bars).
    """
    summary = RunSummary(run_id=run_id, prompts=len(prompts))
    for p in prompts:
        writer.add("prompts", p.as_row())
    recorder = RecordingEngine(engine, writer, run_id=run_id, constitution_version=constitution.version)
    recorder.preload(store, [p.prompt_id for p in prompts])
    gate = asyncio.Semaphore(window)
    started = time.perf_counter()

    async def one(prompt: "PromptRow") -> None:
        async with gate:
            try:
                await _chain(prompt, recorder, constitution, writer, run_id, config, run_seed, summary)
            except Exception as exc:  # a bug in one chain must not sink the run; it is counted and reported
                _failed(summary, prompt, "chain", f"{type(exc).__name__}: {exc}")
            if on_prompt_done:
                on_prompt_done(recorder.tokens_out)

    await asyncio.gather(*(one(p) for p in prompts))
    writer.flush()
    summary.seconds = time.perf_counter() - started
    summary.engine_calls = recorder.engine_calls
    summary.output_tokens = recorder.tokens_out
    summary.reused = recorder.replayed
    return summary


async def _chain(prompt: "PromptRow", engine: RecordingEngine, constitution: "Constitution", writer: "Writer",
                 run_id: str, config: CaiConfig, run_seed: int, summary: RunSummary) -> None:
    """One prompt: respond, critique/revise, judge.

    An engine failure ends the chain and is reported (its attempts are already recorded); nothing that depends
    on the failed call is written, so the next run redoes exactly that part. An empty output is data, not a
    failure: it is stored as NULL and ends the chain the same way on every run.
    """
    params = config.params()
    seeded = replace(params, seed=derive_seed(run_seed, prompt.prompt_id, "respond"))
    first = await respond(prompt, engine, constitution, seeded)
    if not first.ok:
        return _failed(summary, prompt, "respond", first.error)
    original = clean_output(first.text)
    if original is None:
        summary.empty_outputs += 1
        return
    summary.responses += 1
    rounds = await critique_revise(prompt, original, engine, constitution, params,
                                   rounds=config.rounds, run_seed=run_seed)
    chain = chain_id(prompt.prompt_id, constitution.version, engine.model, run_seed, config)
    for r in rounds:
        error = r.critique.error or (r.revision.error if r.revision else None)
        if error:
            return _failed(summary, prompt, f"round {r.number}", error)
        writer.add("revisions", _revision_row(chain, r, prompt, original, first.key, run_id, constitution,
                                              engine.model))
    final = rounds[-1].revised_text if len(rounds) == config.rounds else None
    if final is None:
        summary.empty_outputs += 1
        return
    summary.revisions += 1
    if not config.judge or final == original:
        return  # identical texts carry no preference
    pair = pair_id(prompt.prompt_id, original, final)
    principle = draw_judge_principle(constitution, run_seed, pair)
    verdict = await judge_pair(engine, constitution, principle, list(prompt.messages), original, final,
                               prompt.prompt_id)
    if verdict.p_a is None:
        return _failed(summary, prompt, "judge", verdict.ab.error or verdict.ba.error)
    writer.add("comparisons", _comparison_row(pair, chain, verdict, prompt, original, final, run_id,
                                              constitution, engine.model))
    summary.comparisons += 1


def _failed(summary: RunSummary, prompt: "PromptRow", where: str, error: str | None) -> None:
    summary.failed_prompts += 1
    summary.errors.append(f"prompt {prompt.prompt_id[:12]} {where}: {error}")


def _revision_row(chain: str, r: Round, prompt: "PromptRow", original: str, response_key: str, run_id: str,
                  constitution: "Constitution", model: str) -> dict:
    return {
        "chain_id": chain, "round": r.number, "run_id": run_id, "prompt_id": prompt.prompt_id,
        "principle_id": r.principle_id, "original": original, "before": r.before,
        "critique": clean_output(r.critique.text), "revision": r.revised_text, "response_key": response_key,
        "critique_key": r.critique.key if r.critique.ok else None,
        "revision_key": r.revision.key if r.revision and r.revision.ok else None,
        "constitution_name": constitution.name, "constitution_version": constitution.version,
        "model": model, "created_at": datetime.now(timezone.utc),
    }


def _comparison_row(pair: str, chain: str, v: Verdict, prompt: "PromptRow", a: str, b: str, run_id: str,
                    constitution: "Constitution", judge_model: str) -> dict:
    return {
        "comparison_id": content_hash("comparison", pair, v.principle_id, judge_model, constitution.version),
        "pair_id": pair, "run_id": run_id, "prompt_id": prompt.prompt_id, "chain_id": chain,
        "principle_id": v.principle_id, "response_a": a, "response_b": b,
        "source_a": "original", "source_b": "revision", "key_ab": v.ab.key, "key_ba": v.ba.key,
        "p_a_ab": v.p_a_ab, "p_a_ba": v.p_a_ba, "p_a": v.p_a, "consistent": v.consistent,
        "method": v.ab.method, "judge_model": judge_model, "constitution_name": constitution.name,
        "constitution_version": constitution.version, "created_at": datetime.now(timezone.utc),
    }
