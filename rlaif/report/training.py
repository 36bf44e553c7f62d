"""Report sections on training: curves over steps, win rates against the base, over-optimisation warnings.

The tables arrive with the training migration (006: per-step metrics, win rates; issue #10) and the RL migration
(007: the over-optimisation monitor; issue #11). Until a database has them, each section says so in one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlaif.report.data import pending
from rlaif.report.model import Section

if TYPE_CHECKING:
    import duckdb

    Con = duckdb.DuckDBPyConnection


def curves(con: "Con", run_id: str | None) -> Section:
    """Loss, reward accuracy and margins, KL, reward and length over steps."""
    return pending(con, "train-curves", "Training curves", version=6, issue=10, what="training metrics")


def win_rate(con: "Con", run_id: str | None) -> Section:
    """The win rate against the base with its interval, and the length-controlled one."""
    return pending(con, "train-win-rate", "Win rate against the base", version=6, issue=10, what="win rates")


def over_optimisation(con: "Con", run_id: str | None) -> Section:
    """The over-optimisation monitor's warnings: the proxy reward rising while the judge's score falls."""
    return pending(con, "train-overopt", "Over-optimisation warnings", version=7, issue=11,
                   what="over-optimisation warnings")


SECTIONS = [curves, win_rate, over_optimisation]
