"""What an RL run stores per rollout: a ``generations`` row, an ``rl_rollouts`` row and its ``rollout_rewards``.

A rollout's key is ``content_hash("rollout", run, step, position)``, its position in the step's batch (one prompt
may appear twice in a batch where an epoch of prompts wraps into the next): the same place in the same run gives
the same key, so a resumed run that redraws a step (the draws are seeded by the step) writes each row once. The
rows of steps after the checkpoint a run resumes from are deleted first (``forget_after``), as the tracking layer
does with their metrics: they describe weights that were thrown away.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rlaif.engines.base import content_hash
from rlaif.store import utcnow

if TYPE_CHECKING:
    from rlaif.store import Store, Writer
    from rlaif.train.rewards import RewardScores
    from rlaif.train.rollout import Rollouts

ROLLOUT_STAGE = "rollout"


def rollout_key(run_id: str, step: int, position: int) -> str:
    return content_hash("rollout", run_id, step, position)


def policy_name(run_id: str, step: int) -> str:
    """The model recorded on a rollout: the run's weights after ``step`` updates."""
    return f"{run_id}@{step}"


def rollout_keys(run_id: str, step: int, rollouts: Rollouts) -> list[str]:
    return [rollout_key(run_id, step, i) for i in range(len(rollouts))]


def write_rollouts(writer: Writer, *, run_id: str, step: int, rollouts: Rollouts, keys: Sequence[str],
                   rewards: RewardScores, penalised: Sequence[float], kl: Sequence[float],
                   advantages: Sequence[float], sampling: dict[str, Any]) -> None:
    """Buffer every row of one step's rollouts (``step`` is the update they fed, 1-based)."""
    now = utcnow()
    latency = rollouts.seconds / max(1, len(rollouts))
    model = policy_name(run_id, step - 1)
    engine = rollouts.extra.get("sampler", "transformers")  # vllm when a server sampled them
    for i, key in enumerate(keys):
        prompt = rollouts.prompt_of(i)
        params = {**sampling, "step": step, "sample": rollouts.sample_of(i)}
        writer.add("generations", {
            "key": key, "run_id": run_id, "kind": "chat", "stage": ROLLOUT_STAGE, "prompt_id": prompt.prompt_id,
            "messages": [dict(m) for m in prompt.messages], "prompt_text": None, "params": json.dumps(params),
            "engine": engine, "model": model, "output": rollouts.texts[i], "choice_logprobs": None,
            "choice_method": None, "finish_reason": "stop" if rollouts.ended[i] else "length",
            "prompt_tokens": len(prompt.ids), "completion_tokens": len(rollouts.responses[i]),
            "latency_s": latency, "constitution_version": None, "created_at": now,
        })
        writer.add("rl_rollouts", {
            "key": key, "run_id": run_id, "step": step, "prompt_id": prompt.prompt_id,
            "sample": rollouts.sample_of(i), "response_tokens": len(rollouts.responses[i]),
            "ended": bool(rollouts.ended[i]), "score": float(rewards.total[i]), "penalised_score": float(penalised[i]),
            "kl": float(kl[i]), "advantage": float(advantages[i]), "created_at": now,
        })
    for row in rewards.rows(keys, run_id, now):
        writer.add("rollout_rewards", row)


def forget_after(store: Store, run_id: str, step: int) -> None:
    """Delete the rollouts (and their generations and rewards) of ``run_id`` past ``step``."""
    later = "SELECT key FROM rl_rollouts WHERE run_id = ? AND step > ?"
    with store.connect() as con:
        con.execute(f"DELETE FROM generations WHERE key IN ({later})", [run_id, step])
        con.execute(f"DELETE FROM rollout_rewards WHERE key IN ({later})", [run_id, step])
        con.execute("DELETE FROM rl_rollouts WHERE run_id = ? AND step > ?", [run_id, step])
        con.execute("DELETE FROM overopt_records WHERE run_id = ? AND step > ?", [run_id, step])
        con.execute("DELETE FROM overopt_warnings WHERE run_id = ? AND step > ?", [run_id, step])
