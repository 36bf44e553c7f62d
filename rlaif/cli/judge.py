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


@judge_app.command("eval")
def judge_eval(
    pairs: str = typer.Option(..., "--pairs", help="Labelled pairs: prompt, response_a, response_b, label "
                                                     "(A|B), or prompt, chosen, rejected; any prompt-source format."),
    mode: Optional[str] = typer.Option(None, help=MODE_HELP),
    constitution: str = typer.Option("helpful-harmless", help="Shipped constitution name or YAML path."),
    principles: int = typer.Option(1, min=1, max=16, help="Judge principles sampled per pair (an ensemble)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Judge only the first N pairs."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    progress: Progress = True,
) -> None:
    """Judge labelled pairs in one or all modes; print agreement, position bias, calibration, length bias."""
    import json

    from rlaif.constitution import load_constitution, resolve_constitution
    from rlaif.judge.config import MODES, JudgeConfig, default_mode
    from rlaif.judge.evaluate import format_report, run_judge_eval

    effective = settings()
    feedback = getattr(effective, "feedback", None) or effective  # per-role settings once i8-sft lands
    chosen = mode or default_mode(feedback.engine)
    if chosen != "all" and chosen not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)} or all, got {chosen!r}")
    modes = list(MODES) if chosen == "all" else [chosen]
    rules = load_constitution(resolve_constitution(constitution))
    report = run_judge_eval(effective, pairs, rules, modes, config=JudgeConfig(principles=principles),
                            limit=limit, show_progress=progress and not as_json)
    echo(json.dumps(report.as_dict(), indent=2) if as_json else format_report(report))
