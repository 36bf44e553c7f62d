"""``rlaif judge ...``: the AI judge's commands (``judge pairs`` comes with the prefs flow)."""

from __future__ import annotations

from typing import Optional

import typer

from rlaif.cli._app import Progress, app, echo, settings
from rlaif.errors import UserError

judge_app = typer.Typer(help="Measure and use the AI judge (the feedback role) on pairs of responses.",
                        no_args_is_help=True)
app.add_typer(judge_app, name="judge")

MODE_HELP = "choice | cot | contrast | score | all (default: the engine's measured default, docs/judge.md)"


SHIPPED_PAIRS = "rlaif/data/judge_eval_kinds.jsonl"


@judge_app.command("eval")
def judge_eval(
    pairs: Optional[str] = typer.Option(None, "--pairs", help="Labelled pairs: prompt, response_a, response_b, "
                                        "label (A|B) [, kind, split], or prompt, chosen, rejected; any prompt-source "
                                        f"format. Default: the shipped set ({SHIPPED_PAIRS})."),
    mode: Optional[str] = typer.Option(None, help=MODE_HELP + "; or a comma-separated list"),
    split: Optional[str] = typer.Option(None, help="Only the pairs of this split column: dev (choosing) or eval "
                                                    "(reporting)."),
    dev: bool = typer.Option(False, "--dev", help="Choose a mode: the shipped set's dev split in every mode."),
    write_defaults: bool = typer.Option(False, "--write-defaults", help="With --dev: record the chosen mode for "
                                        "this engine as its default (rlaif/data/judge_defaults.json)."),
    constitution: str = typer.Option("helpful-harmless", help="Shipped constitution name or YAML path."),
    principles: int = typer.Option(1, min=1, max=16, help="Judge principles sampled per pair (an ensemble)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Judge only the first N pairs."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    progress: Progress = True,
) -> None:
    """Judge labelled pairs in one or all modes; print agreement beside baselines that cannot read (always longer,
    always shorter, word overlap, slot A), per kind, with position bias, calibration and length bias."""
    import json
    import sys

    from rlaif.constitution import load_constitution, resolve_constitution
    from rlaif.judge.config import MODES, JudgeConfig, default_mode
    from rlaif.judge.evaluate import format_report, run_judge_eval
    from rlaif.judge.evaluate import write_defaults as record_defaults
    from rlaif.resources import package_file

    effective = settings()
    feedback = getattr(effective, "feedback", None) or effective  # per-role settings once i8-sft lands
    if write_defaults and not dev:
        raise UserError("--write-defaults needs --dev (defaults are chosen on the dev split)")
    chosen = mode or ("all" if dev else default_mode(feedback.engine))
    modes = list(MODES) if chosen == "all" else chosen.split(",")
    if any(m not in MODES for m in modes):
        raise UserError(f"--mode must be one of {', '.join(MODES)}, a comma-separated list of them, or all, "
                        f"got {chosen!r}")
    source = pairs or str(package_file("data", "judge_eval_kinds.jsonl"))
    rules = load_constitution(resolve_constitution(constitution))
    report = run_judge_eval(effective, source, rules, modes, config=JudgeConfig(principles=principles),
                            limit=limit, show_progress=progress and not as_json, split="dev" if dev else split)
    echo(json.dumps(report.as_dict(), indent=2) if as_json else format_report(report))
    if write_defaults:
        echo(f"recorded in {record_defaults(report, 'rlaif ' + ' '.join(sys.argv[1:]))}")
