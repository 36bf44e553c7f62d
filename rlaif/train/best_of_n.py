"""Best-of-N: sample N answers per prompt from the policy role, keep the one the reward ranks highest.

Best-of-N (rejection sampling; Nakano et al. 2021, Touvron et al. 2023 section 3.2.3) uses the reward without
changing the policy, so it is both a data source and a baseline: the answers it keeps become SFT rows, and its
win rate against the base shows what the reward can buy with no training, beside PPO and DPO.

- **Generation** goes through the engine protocol (any engine: transformers, vLLM, an OpenAI-compatible server)
  wrapped in ``RecordingEngine``, so every candidate is a ``generations`` row (stage ``best-of-n``) and a rerun
  answers stored candidates from the database. Candidate i of a prompt is seeded with
  ``derive_seed(seed, prompt_id, "best-of-n", i)``.
- **Rewards** of every candidate are stored per source in ``rollout_rewards``.
- **Selection**: the highest combined reward, the first such candidate on a tie (``pick_best``).
- **As SFT rows**: one ``best_of_n`` row per prompt and the view ``best_of_n_sft``, which has ``sft_dataset``'s
  columns in its order followed by the lineage (``source``, ``n``, ``reward``, ``reward_source``, the winner's
  generation key). Why a table and a view of our own rather than rows in the SFT tables: ``revisions`` rows mean
  "a critique and a revision of an original", which best-of-N has neither of, and ``sft_dataset`` belongs to the
  generation flow; a view with the same columns unions with it in one line
  (``SELECT * FROM sft_dataset UNION ALL BY NAME SELECT * FROM best_of_n_sft``) without touching either.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from rlaif.engines.base import ChatRequest, Completion, SamplingParams, chat_key, content_hash
from rlaif.errors import ConfigError
from rlaif.stages import derive_seed
from rlaif.train.rewards import RewardBatch

if TYPE_CHECKING:
    from rlaif.engines.base import Engine
    from rlaif.prompts import PromptRow
    from rlaif.store import Store
    from rlaif.train.rewards import CombinedReward

STAGE = "best-of-n"


class BestOfNOptions(BaseModel):
    """Options of one best-of-N run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(4, ge=1, le=1024, description="answers sampled per prompt")
    max_tokens: int = Field(256, ge=1, le=32768, description="tokens per answer")
    temperature: float = Field(0.7, gt=0.0, le=2.0, description="sampling temperature (N samples must differ)")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = Field(0, ge=0, description="candidate seeds derive from it")
    split: str = Field("train", pattern="^(train|eval|all)$", description="which prompts: train | eval | all")
    limit: int | None = Field(None, ge=1, description="at most this many prompts")

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)


@dataclass
class Selection:
    """The winner of one prompt, and every candidate with its combined reward."""

    prompt: PromptRow
    candidates: list[Completion]
    rewards: list[float]
    best: int
    scored: int  # candidates at least one reward source could score

    @property
    def chosen(self) -> Completion:
        return self.candidates[self.best]


@dataclass
class BestOfNSummary:
    run_id: str
    prompts: int = 0
    selected: int = 0
    reused: int = 0  # prompts whose selection was stored already
    failed: int = 0  # prompts with no candidate (every engine call failed)
    mean_best: float = 0.0  # mean reward of the winners
    mean_all: float = 0.0  # mean reward of all candidates: the gain of best-of-N is the difference
    errors: list[str] = field(default_factory=list)


def pick_best(rewards: Sequence[float]) -> int:
    """argmax_i r_i, the first index on a tie."""
    if not rewards:
        raise ValueError("no candidates to pick from")
    return max(range(len(rewards)), key=lambda i: (rewards[i], -i))


def selection_id(prompt_id: str, options: BestOfNOptions, reward_source: str, policy_model: str) -> str:
    return content_hash("best-of-n", prompt_id, options.n, reward_source, policy_model, options.seed,
                        options.sampling())


def candidate_requests(prompt: PromptRow, options: BestOfNOptions, model: str) -> list[ChatRequest]:
    """Input: a prompt. Output: its N seeded chat requests (the conversation as given, no system turn added)."""
    messages = tuple({"role": m["role"], "content": m["content"]} for m in prompt.messages)
    out = []
    for i in range(options.n):
        params = dataclasses.replace(options.sampling(), seed=derive_seed(options.seed, prompt.prompt_id, STAGE, i))
        out.append(ChatRequest(chat_key(messages, params, model), messages, params, STAGE, prompt.prompt_id))
    return out


async def sample_candidates(engine: Engine, prompts: Sequence[PromptRow], options: BestOfNOptions,
                            window: int = 64) -> list[list[Completion]]:
    """Every prompt's N candidates, ``window`` requests in flight; failed ones are left out."""
    gate = asyncio.Semaphore(window)

    async def one(request: ChatRequest) -> Completion:
        async with gate:
            return await engine.chat(request)

    results = await asyncio.gather(*(asyncio.gather(*(one(r) for r in candidate_requests(p, options, engine.model)))
                                     for p in prompts))
    return [[c for c in group if c.ok and c.text is not None] for group in results]


def select(prompts: Sequence[PromptRow], candidates: Sequence[list[Completion]], reward: CombinedReward,
           run_id: str, now: Any) -> tuple[list[Selection], list[dict]]:
    """Score every candidate in one batch, pick each prompt's best; returns (selections, rollout_rewards rows)."""
    flat = [(p, c) for p, group in zip(prompts, candidates) for c in group]
    if not flat:
        return [], []
    batch = RewardBatch([p.messages for p, _ in flat], [c.text or "" for _, c in flat],
                        [p.prompt_id for p, _ in flat], [c.finish_reason == "stop" for _, c in flat])
    scores = reward.score(batch)
    rows = scores.rows([c.key for _, c in flat], run_id, now)
    scored = [any(src.values[j] is not None for src in scores.by_source.values()) for j in range(len(flat))]
    selections, start = [], 0
    for prompt, group in zip(prompts, candidates):
        if group:
            end = start + len(group)
            values = scores.total[start:end]
            selections.append(Selection(prompt, group, values, pick_best(values), sum(scored[start:end])))
        start += len(group)
    return selections, rows


def selection_row(s: Selection, *, sid: str, run_id: str, options: BestOfNOptions, reward_spec: str,
                  policy_model: str, now: Any) -> dict:
    return {
        "selection_id": sid, "run_id": run_id, "prompt_id": s.prompt.prompt_id, "n": options.n, "scored": s.scored,
        "chosen_key": s.chosen.key, "chosen": s.chosen.text, "reward": s.rewards[s.best],
        "reward_mean": sum(s.rewards) / len(s.rewards), "reward_source": reward_spec,
        "candidate_keys": [c.key for c in s.candidates], "policy_model": policy_model, "seed": options.seed,
        "created_at": now,
    }


def run_best_of_n(store: Store, engine: Engine, prompts: Sequence[PromptRow], reward: CombinedReward, *,
                  options: BestOfNOptions, reward_spec: str, log: Callable[[str], None] = print) -> BestOfNSummary:
    """Best-of-N over ``prompts`` with ``engine`` (the policy role), stored as ``best_of_n`` rows."""
    from rlaif.recording import RecordingEngine, StoredResults
    from rlaif.store import Writer, utcnow

    chosen = [p for p in prompts if options.split == "all" or p.split == options.split][: options.limit]
    if not chosen:
        raise ConfigError(f"none of the {len(prompts)} prompts is in the {options.split} split; use --split all")
    run_id = _open_run(store, options, reward_spec, engine)
    summary = BestOfNSummary(run_id, prompts=len(chosen))
    ids = {p.prompt_id: selection_id(p.prompt_id, options, reward_spec, engine.model) for p in chosen}
    done = store.existing("best_of_n", "selection_id", ids.values())
    todo = [p for p in chosen if ids[p.prompt_id] not in done]
    summary.reused = len(chosen) - len(todo)
    try:
        with Writer(store, max_rows=1024, max_age_s=5.0) as writer, reward.recorded_in(writer, run_id):
            for p in todo:
                writer.add("prompts", p.as_row())
            stored = StoredResults(store)
            stored.load([p.prompt_id for p in todo])
            recorder = RecordingEngine(engine, writer, run_id=run_id, constitution_version=None, stored=stored)
            candidates = asyncio.run(_sample_and_close(recorder, todo, options))
            now = utcnow()
            selections, reward_rows = select(todo, candidates, reward, run_id, now)
            for row in reward_rows:
                writer.add("rollout_rewards", row)
            for s in selections:
                writer.add("best_of_n", selection_row(s, sid=ids[s.prompt.prompt_id], run_id=run_id,
                                                      options=options, reward_spec=reward_spec,
                                                      policy_model=engine.model, now=now))
    except BaseException as exc:
        _close_run(store, run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    _summarise(summary, selections, candidates, todo)
    _close_run(store, run_id, "partial" if summary.failed else "completed",
               f"{summary.failed} prompts had no candidate" if summary.failed else None)
    log(f"best-of-{options.n}: {summary.selected} prompts selected ({summary.reused} stored already, "
        f"{summary.failed} failed); mean reward of the best {summary.mean_best:.4g}, of all {summary.mean_all:.4g}")
    return summary


async def _sample_and_close(engine: Any, prompts: Sequence[PromptRow], options: BestOfNOptions) -> list:
    try:
        return await sample_candidates(engine, prompts, options)
    finally:
        await engine.aclose()


def _summarise(summary: BestOfNSummary, selections: list[Selection], candidates: list[list[Completion]],
               todo: Sequence[PromptRow]) -> None:
    summary.selected = len(selections)
    summary.failed = sum(1 for group in candidates if not group)
    summary.errors = [f"prompt {p.prompt_id[:12]}: no candidate" for p, g in zip(todo, candidates) if not g]
    if selections:
        summary.mean_best = sum(s.rewards[s.best] for s in selections) / len(selections)
        every = [r for s in selections for r in s.rewards]
        summary.mean_all = sum(every) / len(every)


def _open_run(store: Store, options: BestOfNOptions, reward_spec: str, engine: Engine) -> str:
    from rlaif.runs import new_run_id
    from rlaif.store import utcnow

    run_id = new_run_id()
    store.upsert_run({"run_id": run_id, "kind": STAGE, "status": "running",
                      "params": json.dumps({**options.model_dump(), "reward": reward_spec}), "engine": engine.name,
                      "model": engine.model, "seed": options.seed, "started_at": utcnow(), "finished_at": None,
                      "prefect_flow_run_id": None, "error": None})
    return run_id


def _close_run(store: Store, run_id: str, status: str, error: str | None = None) -> None:
    from rlaif.runs import finish_run

    finish_run(store, run_id, status, error)
