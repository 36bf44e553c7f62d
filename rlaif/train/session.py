"""One training run from start to end, the part every trainer shares.

Read the dataset rows (main process; broadcast to the others), tokenize, open or resume the run row, hold the
output folder's lock, build the trainer's ``Task``, run the loop, save the servable model, register it and close
the row. A trainer (``sft``, ``reward_model``, ``dpo``) supplies only ``Recipe``: what to read, how to make
examples, how to build its task and how to save its result.

A user error on the main process (an empty view, a folder of another run) is sent to every process, so all of
them stop with the same one line instead of the others waiting forever on a collective.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif.errors import ConfigError, EngineError, StoreError, UserError
from rlaif.train import tracking
from rlaif.train.data import by_split, dataset_version, end_of_turn_strings, steps_per_epoch
from rlaif.train.loop import LoopContext, Task, fit, make_accelerator
from rlaif.train.model_card import write_model_card
from rlaif.train.models import end_of_turn_ids, load_tokenizer, save_model_folder, select_device, select_precision
from rlaif.train.options import TrainOptions


@dataclass
class Setup:
    """What a recipe's functions receive."""

    accelerator: Any
    device: Any  # torch.device
    precision: str
    base_path: Path
    base_model: str
    tokenizer: Any
    end_of_turn: list[str]
    options: Any  # the trainer's TrainOptions subclass
    out_dir: Path
    store: Any = None
    run_id: str = ""
    total_steps: int = 0
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class Recipe:
    """A trainer's part of a run."""

    kind: str  # 'sft' | 'rm' | 'dpo'
    dataset: str  # the view it reads, recorded on the run row
    read_rows: Callable[[Any], list[dict]]  # store -> rows (main process only)
    make_examples: Callable[[Sequence[dict], Setup], tuple[list[Any], int]]  # -> (examples, rows skipped)
    build_task: Callable[[Setup, list[Any], list[Any]], Task]  # (setup, train, eval) -> Task
    # (setup, unwrapped module, folder, meta, full state dict under FSDP/DeepSpeed else None) -> folder
    save: Callable[[Setup, Any, Path, dict, dict | None], Path]


@dataclass
class TrainResult:
    run_id: str
    kind: str
    final_path: str | None
    steps: int
    already_done: bool = False  # the same run had completed before; nothing was trained


def run_training(recipe: Recipe, store: Any, *, options: TrainOptions, base_model: str, base_path: Path,
                 out_dir: Path, device: str = "auto", log: Callable[[str], None] = print,
                 prefect_flow_run_id: str | None = None) -> TrainResult:
    """Train ``recipe`` on the rows of ``store`` from ``base_path``; see the module docstring."""
    from accelerate.utils import set_seed

    torch_device = select_device(device)
    precision = select_precision(torch_device, options.precision)
    accelerator = make_accelerator(torch_device, precision)
    main = accelerator.is_main_process
    setup = Setup(accelerator, accelerator.device, precision, Path(base_path), base_model, None, [], options,
                  Path(out_dir).resolve(), store, log=log if main else (lambda _: None))
    world = accelerator.num_processes
    if options.batch_size % (options.micro_batch_size * world):
        raise ConfigError(f"batch_size {options.batch_size} is not a multiple of micro_batch_size "
                          f"{options.micro_batch_size} x {world} processes")
    rows = on_main(accelerator, lambda: _read_rows(recipe, store))
    setup.tokenizer = load_tokenizer(setup.base_path)
    setup.end_of_turn = end_of_turn_strings(setup.tokenizer, end_of_turn_ids(setup.base_path, setup.tokenizer))
    train_rows, eval_rows = by_split(rows)
    train, skipped = recipe.make_examples(train_rows, setup)
    evals, skipped_eval = recipe.make_examples(eval_rows, setup)
    if not train:
        raise ConfigError(f"no {recipe.dataset} rows in the train split fit max_length {options.max_length}")
    total = options.max_steps or options.epochs * steps_per_epoch(len(train), options.batch_size)
    setup.total_steps = total
    spec = tracking.RunSpec(recipe.kind, options, base_model, recipe.dataset, dataset_version(r["key"] for r in rows),
                            len(train_rows), len(eval_rows), setup.out_dir, world, torch_device.type, precision, total,
                            prefect_flow_run_id)
    start = on_main(accelerator, lambda: tracking.open_run(store, spec))
    setup.run_id = start.run_id
    if start.completed:
        setup.log(f"run {start.run_id} already completed; its model is at {start.final_path}")
        return TrainResult(start.run_id, recipe.kind, start.final_path, total, already_done=True)
    setup.log(f"{recipe.kind} run {start.run_id}: {len(train)} train / {len(evals)} eval examples "
        f"({skipped + skipped_eval} skipped), {total} steps, {world} process(es), {torch_device.type} {precision}"
        + (f", resuming at step {start.resume_step}" if start.resume_from else ""))
    with contextlib.ExitStack() as stack:
        if main:
            stack.enter_context(tracking.run_lock(setup.out_dir))
            tracking.clear_staging(setup.out_dir)
        try:
            set_seed(options.seed)
            task = recipe.build_task(setup, train, evals)
            ctx = LoopContext(store, start.run_id, setup.out_dir, total, start.resume_step, start.resume_from,
                              setup.log)
            model = fit(task, options, accelerator, ctx)
            final = _save_final(recipe, setup, model, spec, total)
        except BaseException as exc:
            if main:
                tracking.finish_run(store, start.run_id, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise
    return TrainResult(start.run_id, recipe.kind, str(final) if final else None, total)


def _read_rows(recipe: Recipe, store: Any) -> list[dict]:
    store.migrate()
    return recipe.read_rows(store)


def _save_final(recipe: Recipe, setup: Setup, model: Any, spec: tracking.RunSpec, total: int) -> Path | None:
    """Save the servable model (main process; every process helps gather a sharded state first)."""
    accelerator = setup.accelerator
    state = None
    if str(accelerator.distributed_type).split(".")[-1] in ("FSDP", "DEEPSPEED"):
        state = accelerator.get_state_dict(model)
    final = None
    if accelerator.is_main_process:
        meta = {"kind": recipe.kind, "run_id": setup.run_id, "step": total, "base_model": spec.base_model,
                "data_version": spec.version.hash, "options": setup.options.model_dump(mode="json")}
        final = recipe.save(setup, accelerator.unwrap_model(model), setup.out_dir / tracking.FINAL, meta, state)
        tracking.register_checkpoint(setup.store, setup.run_id, "final", total, final)
        tracking.prune_checkpoints(setup.store, setup.run_id, keep=0)  # a finished run never resumes
        tracking.finish_run(setup.store, setup.run_id, "completed", steps_done=total, final_path=str(final))
        write_model_card(setup.store, final)
        setup.log(f"saved {final}")
    accelerator.wait_for_everyone()
    return final


def on_main(accelerator: Any, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the main process and give its result (or its user error) to every process."""
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = fn()
        except UserError as exc:
            error = exc
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        payload = [result, None if error is None else (type(error), str(error))]
        broadcast_object_list(payload, from_process=0)
        result, sent = payload
        if sent is not None and error is None:
            kind = sent[0] if sent[0] in (ConfigError, StoreError, EngineError) else UserError
            error = kind(sent[1])
    if error is not None:
        raise error
    return result


def save_policy(setup: Setup, module: Any, folder: Path, meta: dict, state: dict | None) -> Path:
    """A trained policy as a servable folder (``TokenLogps`` unwrapped to its causal LM, LoRA merged)."""
    inner = None if state is None else {k.removeprefix("lm."): v for k, v in state.items()}
    return save_model_folder(module.lm, setup.tokenizer, folder, meta=meta, state_dict=inner)
