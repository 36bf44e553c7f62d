"""``rlaif judge eval``: judge labelled pairs in one or more modes, measure agreement and biases, store it all.

Every engine call goes through ``RecordingEngine`` into ``generations``/``attempts`` under a run of kind
``judge-eval`` (so a rerun of the same eval answers from the database), then one ``judge_evals`` row per mode
and one ``judge_eval_pairs`` row per pair and mode. The metrics are ``rlaif.judge.metrics``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlaif.engines.base import content_hash
from rlaif.judge.config import JudgeConfig, Mode
from rlaif.judge.metrics import EvalRecord, Metric, best_baseline, by_kind, evaluate, signal
from rlaif.judge.pairs_file import LabelledPair, read_pair_file
from rlaif.judge.verdict import Judgement, Verdict

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.constitution import Constitution
    from rlaif.engines.base import Engine, Message
    from rlaif.store import Store, Writer

RUN_KIND = "judge-eval"


@dataclass
class ModeResult:
    mode: Mode
    metrics: dict[str, Metric]
    pairs: int
    decided: int
    failed: int
    seconds: float
    kinds: dict[str, dict[str, Metric]] = field(default_factory=dict)  # per kind: agreement and the baselines

    @property
    def signal(self) -> bool:
        """The mode's agreement is measured above every baseline (lower bound > the best baseline)."""
        return signal(self.metrics)


@dataclass
class EvalReport:
    run_id: str
    pairs_source: str
    judge_model: str
    results: list[ModeResult] = field(default_factory=list)
    split: str | None = None
    judge_engine: str = ""

    def as_dict(self) -> dict[str, Any]:
        """What ``--json`` prints."""
        return {"run_id": self.run_id, "pairs_source": self.pairs_source, "split": self.split,
                "judge_engine": self.judge_engine, "judge_model": self.judge_model,
                "chosen": chosen_mode(self.results), "signal": any(r.signal for r in self.results),
                "modes": {r.mode: {"pairs": r.pairs, "decided": r.decided, "failed": r.failed,
                                   "seconds": round(r.seconds, 2), "signal": r.signal,
                                   "best_baseline": best_baseline(r.metrics)[0],
                                   "metrics": {k: vars(m) for k, m in r.metrics.items()},
                                   "kinds": {k: {n: vars(m) for n, m in ms.items()} for k, ms in r.kinds.items()}}
                          for r in self.results}}


def chosen_mode(results: Sequence[ModeResult]) -> Mode | None:
    """The mode to default to: among modes whose lower bound beats the best baseline, the highest lower bound;
    if none does, the highest agreement (and the judge carries no measured signal)."""
    def lower(r: ModeResult) -> float:
        return r.metrics["agreement"].lo if r.metrics["agreement"].lo is not None else -1.0

    def point(r: ModeResult) -> float:
        return r.metrics["agreement"].value if r.metrics["agreement"].value is not None else -1.0

    with_signal = [r for r in results if r.signal]
    if with_signal:
        return max(with_signal, key=lower).mode
    return max(results, key=point).mode if results else None


@dataclass
class _Run:
    run_id: str
    writer: Writer
    status: str = "completed"
    error: str | None = None


@contextmanager
def recorded_run(store: Store, *, kind: str, params: dict, constitution: Constitution, engine: Engine,
                 seed: int) -> Iterator[_Run]:
    """A ``runs`` row around a block, with a background ``Writer``: the one place this module touches runs."""
    from rlaif.runs import finish_run, new_run_id, record_failure
    from rlaif.store import Writer, utcnow

    run = _Run(new_run_id(), Writer(store, background=True))
    store.upsert_run({
        "run_id": run.run_id, "kind": kind, "status": "running", "params": json.dumps(params, default=str),
        "constitution_name": constitution.name, "constitution_version": constitution.version,
        "engine": engine.name, "model": engine.model, "feedback_engine": engine.name,
        "feedback_model": engine.model, "seed": seed, "started_at": utcnow(), "finished_at": None,
        "prefect_flow_run_id": None, "error": None,
    })
    try:
        yield run
        run.writer.close()
    except BaseException as exc:
        record_failure(store, run.writer, run.run_id, exc)
        raise
    finish_run(store, run.run_id, run.status, run.error)


def oriented(labelled: LabelledPair, verdict: Verdict) -> Verdict:
    """A verdict about (response_a, response_b) in the file's order."""
    return verdict.swapped() if labelled.pair.swapped else verdict


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def overlap(messages: Sequence[Message], text: str) -> float:
    """The word-overlap baseline's score of ``text`` as a reply to ``messages``: the fake engine's score rule
    (``rlaif.engines.fake.overlap_score``), per word. It reads no meaning, so a set it solves measures topicality."""
    from rlaif.engines.base import ScoreRequest
    from rlaif.engines.fake import overlap_score

    scores = overlap_score(ScoreRequest("", tuple(messages), text, "baseline", None))
    return sum(scores) / len(scores)


def pair_outcome(labelled: LabelledPair, judgement: Judgement) -> tuple[EvalRecord, dict]:
    """Input: a labelled pair and its judgement. Output: its metrics record and its ``judge_eval_pairs`` values."""
    verdicts = [oriented(labelled, v) for v in judgement.verdicts]
    ok = [v for v in verdicts if v.status == "ok"]
    a, b = labelled.given
    messages = labelled.pair.messages
    record = EvalRecord(label_a=labelled.label == "A", p=_mean([v.p_a for v in ok]),
                        p_first=_mean([v.p_a_ab for v in ok]), p_second=_mean([v.p_a_ba for v in ok]),
                        vote=_mean([v.vote_a for v in ok]), len_a=len(a.text.strip()), len_b=len(b.text.strip()),
                        overlap_a=overlap(messages, a.text), overlap_b=overlap(messages, b.text),
                        kind=labelled.kind)
    status = "ok" if record.decision is not None else "failed" if judgement.failed else "parse_failed"
    from rlaif.judge.metrics import correct

    values = {
        "row": labelled.row, "pair_id": labelled.pair.pair_id, "label": labelled.label, "p_a": record.p,
        "p_first": record.p_first, "p_second": record.p_second, "vote_a": record.vote,
        "method": verdicts[0].method if verdicts else None, "status": status,
        "consistent": None if record.p_first is None or record.p_second is None
        else (record.p_first - 0.5) * (record.p_second - 0.5) > 0,
        "correct": None if record.decision is None else correct(record.decision, record.label_a),
        "len_a": record.len_a, "len_b": record.len_b, "kind": labelled.kind, "split": labelled.split,
        "overlap_a": record.overlap_a, "overlap_b": record.overlap_b,
        "raw_output": next((v.raw for v in verdicts if v.raw), None) or next((v.error for v in verdicts if v.error),
                                                                             None),
        "judge_keys": json.dumps([v.keys for v in verdicts], sort_keys=True),
    }
    return record, values


async def _judge_all(engine: Engine, constitution: Constitution, labelled: list[LabelledPair], config: JudgeConfig,
                     run_seed: int, advance: Any) -> list[Judgement]:
    from rlaif.judge.defences import guard_for
    from rlaif.stages.judge import judge

    guard = guard_for(engine, constitution)

    async def one(lp: LabelledPair) -> Judgement:
        judgement = await judge(engine, constitution, lp.pair, config=config, run_seed=run_seed, guard=guard)
        advance(0)
        return judgement

    return list(await asyncio.gather(*(one(lp) for lp in labelled)))


def _eval_row(run_id: str, result: ModeResult, source: str, engine: Engine, constitution: Constitution,
              config: JudgeConfig, split: str | None) -> dict:
    from rlaif.store import utcnow

    row: dict[str, Any] = {
        "eval_id": content_hash("judge-eval", run_id, result.mode), "run_id": run_id, "mode": result.mode,
        "pairs_source": source, "judge_engine": engine.name, "judge_model": engine.model,
        "constitution_name": constitution.name, "constitution_version": constitution.version,
        "principles": config.principles, "judge_config": config.model_dump_json(), "pairs": result.pairs,
        "decided": result.decided, "failed": result.failed, "seconds": result.seconds, "created_at": utcnow(),
        "pairs_label_longer": result.metrics["when_label_longer"].n,
        "pairs_label_shorter": result.metrics["when_label_shorter"].n,
        "split": split, "best_baseline": best_baseline(result.metrics)[0], "signal": result.signal,
        "kinds": json.dumps({k: {n: vars(m) for n, m in ms.items()} for k, ms in result.kinds.items()}),
    }
    for name, m in result.metrics.items():
        row.update({name: m.value, f"{name}_lo": m.lo, f"{name}_hi": m.hi})
    return row


def run_judge_eval(settings: Settings, pairs: str, constitution: Constitution, modes: Sequence[Mode], *,
                   config: JudgeConfig | None = None, limit: int | None = None, engine: Engine | None = None,
                   show_progress: bool = False, split: str | None = None) -> EvalReport:
    """Evaluate the feedback role's judge on a labelled pair file in each of ``modes``; store and return it.

    ``split`` keeps only the rows of that ``split`` column ('dev' to choose a mode, 'eval' to report one)."""
    from rlaif.engines import create_engine
    from rlaif.judge.calls import SharedCalls
    from rlaif.progress import prompt_progress
    from rlaif.recording import RecordingEngine
    from rlaif.runner import open_store

    labelled = list(read_pair_file(pairs, require_label=True, limit=limit, split=split))
    if not labelled:
        from rlaif.errors import ConfigError

        raise ConfigError(f"{pairs}: no labelled pairs{f' in split {split!r}' if split else ''} to evaluate")
    source = labelled[0].source
    base = config or JudgeConfig()
    store = open_store(settings)
    engine = engine or create_engine(settings, role="feedback")
    params = {"pairs": source, "modes": list(modes), "limit": limit, "split": split,
              **base.model_dump(exclude={"mode"})}
    report = EvalReport("", source, engine.model, split=split, judge_engine=engine.name)
    with recorded_run(store, kind=RUN_KIND, params=params, constitution=constitution, engine=engine,
                      seed=settings.seed) as run:
        report.run_id = run.run_id
        for lp in labelled:
            run.writer.add("prompts", _prompt_row(lp))
        recorder = RecordingEngine(engine, run.writer, run_id=run.run_id, constitution_version=constitution.version)
        recorder.preload(store, {lp.pair.prompt_id for lp in labelled})
        shared = SharedCalls(recorder)

        async def go(advance: Any) -> None:
            try:
                for mode in modes:
                    config_m = base.model_copy(update={"mode": mode})
                    started = time.perf_counter()
                    judgements = await _judge_all(shared, constitution, labelled, config_m, settings.seed, advance)
                    result = _store_mode(run, labelled, judgements, config_m, time.perf_counter() - started)
                    run.writer.add("judge_evals", _eval_row(run.run_id, result, source, engine, constitution,
                                                            config_m, split))
                    report.results.append(result)
            finally:
                await engine.aclose()

        with prompt_progress(len(labelled) * len(modes), enabled=show_progress, label="judging") as advance:
            asyncio.run(go(advance))
        if any(r.failed for r in report.results):
            run.status, run.error = "partial", "some pairs could not be judged; rerun to retry the engine failures"
    return report


def _prompt_row(lp: LabelledPair) -> dict:
    from rlaif.prompts import make_prompt

    return make_prompt(list(lp.pair.messages), source=lp.source).as_row()


def _store_mode(run: _Run, labelled: list[LabelledPair], judgements: list[Judgement], config: JudgeConfig,
                seconds: float) -> ModeResult:
    from rlaif.store import utcnow

    records = []
    for lp, judgement in zip(labelled, judgements):
        record, values = pair_outcome(lp, judgement)
        records.append(record)
        run.writer.add("judge_eval_pairs", {"run_id": run.run_id, "mode": config.mode, "created_at": utcnow(),
                                            **values})
    decided = sum(r.decision is not None for r in records)
    return ModeResult(config.mode, evaluate(records), len(records), decided, len(records) - decided, seconds,
                      by_kind(records))


LABELS = {
    "agreement": "agreement", "agreement_first": "agreement, a in slot A only",
    "agreement_second": "agreement, a in slot B only", "consistency": "position consistency",
    "first_slot_rate": "first-slot rate", "brier": "Brier score", "ece": "ECE (10 bins)",
    "longer": "baseline: always the longer", "shorter": "baseline: always the shorter",
    "overlap": "baseline: word overlap", "slot_a": "baseline: always slot (A)",
    "when_label_longer": "agreement, labelled is longer", "when_label_shorter": "agreement, labelled is shorter",
}
BASELINE_NAMES = {"longer": "longer", "shorter": "shorter", "overlap": "overlap", "slot_a": "slot (A)"}
ORDERLESS = ("score", "contrast")  # modes that judge one response at a time: no orders, no position bias
W = 20


def _cell(m: Metric) -> str:
    if m.value is None:
        return "n/a"
    return f"{m.value:.2f} [{m.lo:.2f}, {m.hi:.2f}]" if m.lo is not None else f"{m.value:.2f}"


def _row(label: str, width: int, cells: Sequence[str]) -> str:
    return f"{label:<{width}}" + "".join(f"  {c:<{W}}" for c in cells)


def format_report(report: EvalReport) -> str:
    """The eval as a table: one column per mode, 95% intervals in brackets; then agreement per kind beside every
    baseline, and whether any mode carries measured signal."""
    width = max(len(label) for label in LABELS.values())
    split = f" (split {report.split})" if report.split else ""
    lines = [f"judge eval {report.run_id}: {report.judge_model} on {report.pairs_source}{split}",
             _row("", width, [r.mode for r in report.results]),
             _row("pairs (decided / failed)", width, [f"{r.pairs} ({r.decided} / {r.failed})" for r in report.results])]
    for name, label in LABELS.items():
        cells = ["no orders" if name in ("agreement_first", "agreement_second", "consistency", "first_slot_rate")
                 and r.mode in ORDERLESS else _cell(r.metrics[name]) for r in report.results]
        lines.append(_row(label, width, cells))
    lines.append(_row("seconds", width, [f"{r.seconds:.1f}" for r in report.results]))
    lines += _kind_lines(report)
    lines.append(signal_line(report))
    lines.append("intervals: Wilson (proportions), bootstrap of the pairs (Brier, ECE); "
                 f"SQL: SELECT * FROM judge_evals WHERE run_id = '{report.run_id}'")
    return "\n".join(lines)


def _kind_lines(report: EvalReport) -> list[str]:
    """Per kind: each mode's agreement, then every baseline (the same for every mode: they read no verdicts)."""
    first = report.results[0] if report.results else None
    if first is None or not first.kinds:
        return []
    columns = [*(r.mode for r in report.results), *BASELINE_NAMES.values()]
    width = max(len(k) for k in first.kinds) + 8
    lines = ["", "per kind: agreement [95%] of each mode, then the baselines that cannot read",
             _row("kind (pairs)", width, columns)]
    for kind, base in first.kinds.items():
        cells = [_cell(r.kinds[kind]["agreement"]) for r in report.results]
        cells += [_cell(base[b]) for b in BASELINE_NAMES]
        lines.append(_row(f"{kind} ({base['longer'].n})", width, cells))
    return lines


def signal_line(report: EvalReport) -> str:
    """One plain sentence: which mode beats every baseline, or that none does."""
    best = chosen_mode(report.results)
    result = next((r for r in report.results if r.mode == best), None)
    if result is None:
        return "no modes evaluated"
    name, value = best_baseline(result.metrics)
    lo = result.metrics["agreement"].lo
    if result.signal:
        return (f"signal: {best} agrees {_cell(result.metrics['agreement'])}; its lower bound beats the best "
                f"baseline ({BASELINE_NAMES[name]} {value:.2f})")
    return (f"NO MEASURED SIGNAL: no mode's lower bound beats the best baseline ({BASELINE_NAMES[name]} "
            f"{value:.2f}; best mode {best}, lower bound {lo if lo is None else round(lo, 2)}): the judge carries "
            f"no measured signal on {report.judge_model}")


def measured_entry(report: EvalReport, command: str) -> dict[str, Any]:
    """What ``--write-defaults`` records for the report's engine: the chosen mode, whether it carries signal,
    and each mode's agreement beside its best baseline (``rlaif.judge.config.measured_defaults`` reads it)."""
    from rlaif.store import utcnow

    chosen = chosen_mode(report.results)
    modes = {}
    for r in report.results:
        name, value = best_baseline(r.metrics)
        a = r.metrics["agreement"]
        modes[r.mode] = {"agreement": a.value, "lo": a.lo, "hi": a.hi, "n": a.n, "signal": r.signal,
                         "best_baseline": name, "best_baseline_value": value}
    return {"model": report.judge_model, "mode": chosen, "signal": bool(modes.get(chosen, {}).get("signal")),
            "pairs": report.pairs_source, "split": report.split, "run_id": report.run_id,
            "measured_at": str(utcnow())[:10], "command": command, "modes": modes}


def write_defaults(report: EvalReport, command: str, path: Any = None) -> Any:
    """Record the report's chosen mode for its engine in the shipped defaults file (or ``path``); returns it."""
    from pathlib import Path

    from rlaif.judge.config import DEFAULTS_FILE, measured_defaults
    from rlaif.resources import package_file

    target = Path(path) if path else package_file(*DEFAULTS_FILE)
    data = json.loads(target.read_text(encoding="utf-8")) if target.exists() else {}
    data.setdefault("engines", {})[report.judge_engine] = measured_entry(report, command)
    target.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    measured_defaults.cache_clear()
    from rlaif.judge.config import default_config

    default_config.cache_clear()
    return target
