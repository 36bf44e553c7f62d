"""``rlaif judge pairs``: label the pairs a user brings with the AI judge, into the preference dataset.

The same run as ``rlaif generate prefs`` (``cli/generate_prefs.py``), its candidates read from a pair file
instead of sampled: resumable, flagged, canaries checked, every engine call a row.
"""

from __future__ import annotations

from typing import Optional

import typer

from rlaif.cli._app import Prefect, Progress
from rlaif.cli.generate_prefs import execute_prefs, finish
from rlaif.cli.judge import MODE_HELP, judge_app
from rlaif.options import PrefsOptions, option_help


@judge_app.command("pairs")
def judge_pairs(
    pairs: str = typer.Option(..., "--pairs", help=option_help("pairs", PrefsOptions)),
    mode: Optional[str] = typer.Option(None, help=MODE_HELP.replace(" | all", "")),
    principles: Optional[int] = typer.Option(None, help=option_help("principles", PrefsOptions)),
    constitution: Optional[str] = typer.Option(None, help=option_help("constitution", PrefsOptions)),
    limit: Optional[int] = typer.Option(None, help="Judge only the first N pairs."),
    seed: Optional[int] = typer.Option(None, help=option_help("seed", PrefsOptions)),
    prefect: Prefect = True,
    progress: Progress = True,
) -> None:
    """Judge the pairs of a file (prompt, response_a, response_b) into the preference dataset.

    A bad row stops the run before any write (FILE:ROW: column ...). A rerun resumes; pair flags leave ties,
    order-inconsistent and lopsided pairs out of preference_dataset.
    """
    options = PrefsOptions.parse(pairs=pairs, judge_mode=mode, principles=principles, constitution=constitution,
                                 limit=limit, seed=seed)
    finish(execute_prefs(options, kind="judge-pairs", prefect=prefect, progress=progress))
