"""What a training run leaves behind: its row, its metrics, its checkpoints, and how it resumes.

- **The run row** (``train_runs``): kind, options, base model, dataset version, status. Its id is a content hash
  of what defines the run (kind, options minus ``RESUMABLE_CHANGES``, data version, base model, output folder),
  so the same command run again finds the row: a finished run says so and does nothing, an unfinished one
  resumes from its last checkpoint. A folder holding another run's files is refused with the differences named.
- **Metrics** (``train_metrics``): long rows (run, phase, step, name, value), buffered by a ``Writer`` and
  flushed in short transactions, so ``rlaif sql`` can watch a run from another process. Before a resumed run
  repeats the steps past its checkpoint it deletes their rows, so every (phase, step, name) is stored once and
  describes the weights that were kept. The same values also go to the trackers of ``report_to`` (accelerate's
  TensorBoard, W&B and MLflow trackers), each as ``PHASE/NAME`` at its step: ``step/loss`` is the loss curve.
- **Checkpoints** (``train_checkpoints``): a folder per save, written under a temporary name by every process
  (accelerate's state: weights, optimizer, scheduler, each process's RNG) and renamed and registered by the main
  process once complete, so a kill mid-save leaves nothing registered. Only the newest few are kept.
- **The lock**: one training process group per output folder, held with ``flock`` (released by the kernel if
  the process is killed).

Only the main process calls these; the loop makes sure of it. This module imports no torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlaif.engines.base import content_hash
from rlaif.errors import ConfigError
from rlaif.store import Writer, utcnow

if TYPE_CHECKING:
    from rlaif.store import Store
    from rlaif.train.data import DataVersion

RUN_FILE = "run.json"  # in the output folder: which run it belongs to
LOCK_FILE = ".lock"
CHECKPOINTS = "checkpoints"
FINAL = "final"
STATE_FILE = "trainer_state.json"


def train_run_id(kind: str, identity: dict[str, Any], version: DataVersion, base_model: str, out_dir: Path) -> str:
    return "train-" + content_hash("train-run", kind, identity, version.hash, base_model, str(Path(out_dir).resolve()),
                                   length=20)


@dataclass
class RunStart:
    """Where a run starts: fresh, from a checkpoint, or nothing to do (it already completed)."""

    run_id: str
    resume_from: Path | None = None
    resume_step: int = 0
    completed: bool = False
    final_path: str | None = None


@dataclass(frozen=True)
class RunSpec:
    """Everything the run row records at its start."""

    kind: str
    options: Any  # a TrainOptions (pydantic)
    base_model: str
    dataset: str
    version: DataVersion
    train_rows: int
    eval_rows: int
    out_dir: Path
    world_size: int
    device: str
    precision: str
    total_steps: int
    prefect_flow_run_id: str | None = None


def open_run(store: Store, spec: RunSpec) -> RunStart:
    """Insert the run's row, or find it and decide how to continue (see the module docstring)."""
    out = Path(spec.out_dir)
    run_id = train_run_id(spec.kind, spec.options.identity(), spec.version, spec.base_model, out)
    _check_folder_belongs(store, out, run_id, spec)
    found = store.fetch("SELECT status, final_path FROM train_runs WHERE run_id = ?", [run_id])
    if found and found[0]["status"] == "completed":
        return RunStart(run_id, completed=True, final_path=found[0]["final_path"])
    if not found:
        store.insert("train_runs", [_run_row(run_id, spec)])
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_FILE).write_text(json.dumps({"run_id": run_id, "kind": spec.kind}) + "\n", encoding="utf-8")
        return RunStart(run_id)
    latest = latest_checkpoint(store, run_id)
    step = latest[0] if latest else 0
    with store.connect() as con:
        con.execute("UPDATE train_runs SET status = 'running', resumes = resumes + 1, total_steps = ?, error = NULL, "
                    "finished_at = NULL, world_size = ? WHERE run_id = ?", [spec.total_steps, spec.world_size, run_id])
        # The steps after the checkpoint run again; their old rows describe weights that were thrown away.
        con.execute("DELETE FROM train_metrics WHERE run_id = ? AND step > ?", [run_id, step])
    return RunStart(run_id, resume_from=latest[1] if latest else None, resume_step=step)


def _run_row(run_id: str, spec: RunSpec) -> dict[str, Any]:
    return {
        "run_id": run_id, "kind": spec.kind, "status": "running",
        "config": json.dumps(spec.options.model_dump(mode="json")), "base_model": spec.base_model,
        "dataset": spec.dataset, "data_version": spec.version.hash, "data_rows": spec.version.rows,
        "train_rows": spec.train_rows, "eval_rows": spec.eval_rows, "out_dir": str(Path(spec.out_dir).resolve()),
        "world_size": spec.world_size, "device": spec.device, "precision": spec.precision,
        "total_steps": spec.total_steps, "steps_done": 0, "resumes": 0, "final_path": None,
        "started_at": utcnow(), "finished_at": None, "prefect_flow_run_id": spec.prefect_flow_run_id, "error": None,
    }


def _check_folder_belongs(store: Store, out: Path, run_id: str, spec: RunSpec) -> None:
    """Refuse an output folder that holds another run, naming what differs."""
    marker = out / RUN_FILE
    if not marker.is_file():
        return
    other = json.loads(marker.read_text(encoding="utf-8")).get("run_id")
    if other == run_id:
        return
    rows = store.fetch("SELECT kind, config, data_version, data_rows, base_model FROM train_runs WHERE run_id = ?",
                       [other])
    detail = _differences(rows[0], spec) if rows else "it is not in this database"
    raise ConfigError(f"{out} holds training run {other} ({detail}); use another --out")


def _differences(row: dict[str, Any], spec: RunSpec) -> str:
    if row["kind"] != spec.kind:
        return f"a {row['kind']} run, not {spec.kind}"
    if row["base_model"] != spec.base_model:
        return f"base model {row['base_model']}, not {spec.base_model}"
    if row["data_version"] != spec.version.hash:
        return f"its dataset changed: {row['data_rows']} rows then, {spec.version.rows} now"
    old, new = json.loads(row["config"]), spec.options.model_dump(mode="json")
    changed = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(new) if old.get(k) != new.get(k)]
    return "other options: " + ", ".join(changed) if changed else "other options"


def finish_run(store: Store, run_id: str, status: str, *, steps_done: int | None = None,
               final_path: str | None = None, error: str | None = None) -> None:
    """Set the run's end state; ``steps_done`` and ``final_path`` only when given."""
    sets, params = ["status = ?", "finished_at = ?", "error = ?"], [status, utcnow(), error]
    if steps_done is not None:
        sets.append("steps_done = ?")
        params.append(steps_done)
    if final_path is not None:
        sets.append("final_path = ?")
        params.append(final_path)
    with store.connect() as con:
        con.execute(f"UPDATE train_runs SET {', '.join(sets)} WHERE run_id = ?", [*params, run_id])


# --- metrics -----------------------------------------------------------------------------------------------


class MetricsLog:
    """Buffers metric rows and writes them in short transactions (at most every ``max_age_s`` seconds); hands the
    same values to ``trackers`` (``open_trackers``) as they come."""

    def __init__(self, store: Store, run_id: str, *, max_age_s: float = 5.0, trackers: list[Any] | None = None):
        self.run_id = run_id
        self.writer = Writer(store, max_rows=1024, max_age_s=max_age_s)
        self.trackers = trackers or []

    def log(self, step: int, values: dict[str, float], phase: str = "step") -> None:
        now = utcnow()
        for name, value in values.items():
            self.writer.add("train_metrics", {"run_id": self.run_id, "phase": phase, "step": step, "name": name,
                                              "value": None if value is None else float(value), "created_at": now})
        scalars = {f"{phase}/{name}": float(value) for name, value in values.items() if value is not None}
        for tracker in self.trackers:
            tracker.log(scalars, step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        for tracker in self.trackers:
            tracker.finish()


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
TENSORBOARD_DIR = "tensorboard"  # in the output folder: OUT/tensorboard/<run id>/events.out.tfevents.*


def tracker_names(report_to: str) -> list[str]:
    """The trackers ``report_to`` asks for: ``auto`` is TensorBoard when installed, else none; a named tracker
    whose package is missing is a user error (naming the package to install)."""
    import importlib.util

    if report_to == "none":
        return []
    if report_to == "auto":
        return ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
    package = TRACKER_PACKAGES.get(report_to)
    if package is None:
        raise ConfigError(f"report_to must be one of auto, {', '.join(TRACKER_PACKAGES)}, none; got {report_to!r}")
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"--report-to {report_to} needs the {package} package: pip install {package}")
    return [report_to]


def open_trackers(report_to: str, out_dir: Path, run_id: str, options: Any) -> list[Any]:
    """Start accelerate's trackers for a run (main process only), with its options as hyperparameters."""
    names = tracker_names(report_to)
    if not names:
        return []
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    trackers = []
    for name in names:
        cls = LOGGER_TYPE_TO_CLASS[name]
        if name == "tensorboard":
            tracker = cls(run_id, str(Path(out_dir) / TENSORBOARD_DIR))
        elif name == "wandb":
            tracker = cls("rlaif", name=run_id)  # W&B project "rlaif", one W&B run per training run
        else:
            tracker = cls(experiment_name="rlaif", run_name=run_id)
        tracker.start()
        tracker.store_init_configuration(flat_options(options.model_dump(mode="json")))
        trackers.append(tracker)
    return trackers


def flat_options(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested options as ``{"rollout.samples": 4, ...}``: trackers take scalars (lists and None as text)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flat_options(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def read_metrics(store: Store, run_id: str, name: str, phase: str = "step") -> list[tuple[int, float]]:
    """(step, value) of one metric, in step order: what tests and reports read."""
    rows = store.fetch("SELECT step, value FROM train_metrics WHERE run_id = ? AND phase = ? AND name = ? "
                       "ORDER BY step", [run_id, phase, name])
    return [(r["step"], r["value"]) for r in rows]


# --- checkpoints ---------------------------------------------------------------------------------------------


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS / f"step-{step:08d}"


def staging_dir(out_dir: Path, step: int) -> Path:
    """Where every process writes a checkpoint before the main process renames it into place."""
    return Path(out_dir) / CHECKPOINTS / f".tmp-step-{step:08d}"


def clear_staging(out_dir: Path) -> None:
    """Remove half-written checkpoints of a killed run (never registered, so nothing refers to them)."""
    for stale in (Path(out_dir) / CHECKPOINTS).glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)


def commit_checkpoint(store: Store, run_id: str, out_dir: Path, step: int, *, keep: int) -> Path:
    """Rename the staged checkpoint into place, register it, and prune all but the newest ``keep``."""
    staged, final = staging_dir(out_dir, step), checkpoint_dir(out_dir, step)
    shutil.rmtree(final, ignore_errors=True)  # a checkpoint of this step from before a kill, never registered
    os.rename(staged, final)
    register_checkpoint(store, run_id, "resume", step, final)
    prune_checkpoints(store, run_id, keep=keep)
    return final


def register_checkpoint(store: Store, run_id: str, kind: str, step: int, path: Path) -> None:
    """Register a complete checkpoint folder and move the run's ``steps_done`` to it, in one transaction."""
    with store.connect() as con:
        con.execute("BEGIN TRANSACTION")
        # An anti-join rather than INSERT OR IGNORE: a lake (rlaif/lake.py) has no keys to ignore on.
        con.execute("INSERT INTO train_checkpoints SELECT ?, ?, ?, ?, ?, false, ? WHERE NOT EXISTS (SELECT 1 FROM "
                    "train_checkpoints WHERE run_id = ? AND kind = ? AND step = ?)",
                    [run_id, kind, step, str(Path(path).resolve()), _folder_bytes(path), utcnow(), run_id, kind, step])
        con.execute("UPDATE train_runs SET steps_done = ? WHERE run_id = ?", [step, run_id])
        con.execute("COMMIT")


def latest_checkpoint(store: Store, run_id: str) -> tuple[int, Path] | None:
    """The newest registered resume checkpoint whose folder still exists."""
    rows = store.fetch("SELECT step, path FROM train_checkpoints WHERE run_id = ? AND kind = 'resume' AND NOT pruned "
                       "ORDER BY step DESC", [run_id])
    for row in rows:
        if Path(row["path"]).is_dir():
            return row["step"], Path(row["path"])
    return None


def prune_checkpoints(store: Store, run_id: str, *, keep: int) -> None:
    """Delete all but the newest ``keep`` resume checkpoints (``keep=0``: all); their rows stay, marked pruned."""
    rows = store.fetch("SELECT step, path FROM train_checkpoints WHERE run_id = ? AND kind = 'resume' AND NOT pruned "
                       "ORDER BY step DESC", [run_id])
    for row in rows[keep:]:
        shutil.rmtree(row["path"], ignore_errors=True)
        with store.connect() as con:
            con.execute("UPDATE train_checkpoints SET pruned = true WHERE run_id = ? AND kind = 'resume' AND step = ?",
                        [run_id, row["step"]])


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# --- the lock ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold the output folder for one training process group; a second one gets a clear error at once."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(f"{out} is being trained by {holder}; wait for it or use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
