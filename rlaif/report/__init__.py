"""Reports you can look at: DuckDB -> numbers -> matplotlib figures -> one self-contained HTML page.

``write_report(db, out, run_id=None)`` is the entry point (``rlaif report`` and ``rlaif demo`` call it). Sections
live one group per module (overview, generation, chains, preferences, judge, training, rl), the page builder in
``page.py``, the plots in ``figures.py``. Importing this package loads neither matplotlib nor DuckDB.
"""

from __future__ import annotations

from rlaif.report.build import beside, render_report, write_report

__all__ = ["beside", "render_report", "write_report"]
