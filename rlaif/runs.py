"""Run rows: a run's configuration hash, and whether a new invocation resumes an earlier run or starts its own.

A run is identified by what determines its outputs: the options that change requests (``RunOptions.hashed``),
the constitution's content version, both roles' models, the seed and the source's identity. Their hash,
``config_hash``, is stored on the run row and is part of every chain id, so:

- a rerun with the same configuration finds the earlier run (the latest of the same kind, source and hash),
  takes over its run id and continues it: its rows keep their keys (INSERT OR IGNORE stores nothing twice) and
  stored engine results are replayed instead of recomputed;
- a rerun with another configuration gets a new run id and new chain ids, and says in one line which values
  differ from the latest run of the same kind and source, so nothing forks silently.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlaif.engines.base import content_hash
from rlaif.store import utcnow

if TYPE_CHECKING:
    from rlaif.constitution import Constitution
    from rlaif.engines import Engines
    from rlaif.options import RunOptions
    from rlaif.store import Store


def new_run_id() -> str:
    return f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def source_identity(spec: str) -> str:
    """What names a prompt source across invocations: a query's text, or a file's absolute path."""
    if spec.startswith("sql:"):
        return "sql:" + " ".join(spec[4:].split())
    return str(Path(spec).expanduser().resolve())


def configuration(kind: str, options: "RunOptions", constitution: "Constitution", source: str, policy_model: str,
                  feedback_model: str) -> dict[str, Any]:
    """Everything that determines a run's outputs, by name (the seed must already be filled in).

    The kind is in it too, so that a demo and a ``generate sft`` run over the same prompts each own their rows.
    """
    return {"kind": kind, **options.hashed(), "constitution_version": constitution.version, "source": source,
            "policy_model": policy_model, "feedback_model": feedback_model}


def config_hash(config: dict[str, Any]) -> str:
    return content_hash("run-config", config, length=16)


@dataclass(frozen=True)
class RunStart:
    """The run an invocation writes under, and the one line that says how it was chosen (None: a first run)."""

    run_id: str
    config_hash: str
    resumed: bool
    message: str | None


def start_run(store: "Store", *, kind: str, options: "RunOptions", constitution: "Constitution", source: str,
              engines: "Engines", prefect_flow_run_id: str | None = None) -> RunStart:
    """Resume the latest run of this kind, source and configuration, or record a new one; returns which."""
    config = configuration(kind, options, constitution, source, engines.policy.model, engines.feedback.model)
    digest = config_hash(config)
    earlier = store.fetch(
        "SELECT run_id, status, config_hash, params FROM runs WHERE kind = ? AND source = ? "
        "ORDER BY started_at DESC", [kind, source])
    params = json.dumps({**options.model_dump(mode="json"), "config": config})
    same = next((r for r in earlier if r["config_hash"] == digest), None)
    if same is not None:
        _reopen(store, same["run_id"], params, prefect_flow_run_id)
        return RunStart(same["run_id"], digest, True,
                        f"resuming run {same['run_id']} ({same['status']}): same configuration {digest}")
    run_id = new_run_id()
    store.upsert_run({
        "run_id": run_id, "kind": kind, "status": "running", "params": params,
        "constitution_name": constitution.name, "constitution_version": constitution.version,
        "engine": engines.policy.name, "model": engines.policy.model, "seed": options.seed,
        "started_at": utcnow(), "finished_at": None, "prefect_flow_run_id": prefect_flow_run_id, "error": None,
        "config_hash": digest, "source": source, "feedback_engine": engines.feedback.name,
        "feedback_model": engines.feedback.model,
    })
    if not earlier:
        return RunStart(run_id, digest, False, None)
    latest = earlier[0]
    changes = describe_changes(_stored_config(latest["params"]), config)
    return RunStart(run_id, digest, False, f"not resuming run {latest['run_id']}: {changes}")


def _reopen(store: "Store", run_id: str, params: str, prefect_flow_run_id: str | None) -> None:
    """Mark a resumed run running again; its options now read as this invocation gave them (limit, judge)."""
    with store.connect() as con:
        con.execute(
            "UPDATE runs SET status = 'running', finished_at = NULL, error = NULL, params = ?, "
            "prefect_flow_run_id = coalesce(?, prefect_flow_run_id) WHERE run_id = ?",
            [params, prefect_flow_run_id, run_id])


def _stored_config(params: str | None) -> dict[str, Any]:
    try:
        stored = json.loads(params or "{}")
    except json.JSONDecodeError:
        return {}
    return stored.get("config", {}) if isinstance(stored, dict) else {}


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``rounds 1 -> 2, feedback_model a -> b``: the values that differ, in a stable order."""
    changed = [f"{k} {_short(old.get(k))} -> {_short(new.get(k))}" for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k)]
    return ", ".join(changed) if changed else "its configuration was recorded by another version of rlaif"


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def finish_run(store: "Store", run_id: str, status: str, error: str | None = None) -> None:
    store.upsert_run({"run_id": run_id, "status": status, "finished_at": utcnow(), "error": error})


def record_failure(store: "Store", writer: Any, run_id: str, exc: BaseException) -> None:
    """Mark the run ``failed`` with ``exc``'s line, after flushing the writer's buffered rows if it can: the same
    fault may be why we are here, so a flush that fails too only adds a note to ``exc``."""
    try:
        writer.close()
    except Exception as flush_exc:
        exc.add_note(f"buffered rows were not written: {flush_exc}")
    finish_run(store, run_id, "failed", f"{type(exc).__name__}: {exc}")
