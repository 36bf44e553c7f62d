"""What a report section is made of: numbers, tables, plots and texts, never HTML.

Sections build these plain objects from SQL and the page builder (``page.py``) turns them into HTML. Keeping
HTML out of the sections means there is one place that escapes text from the database, and one place that knows
the page's markup. A ``Plot`` holds a drawing function rather than an image, so the figures are drawn after the
read-only connection is closed: a report holds the database only for its queries, and a flow writing to the same
file waits for those alone (docs/storage.md: one process at a time holds a DuckDB file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Union

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Stat:
    """One headline number. ``interval`` is a 95% interval shown beside it; ``fmt`` formats value and bounds."""

    key: str  # stable name, written as data-stat so tests and scripts can read the page
    label: str
    value: float | int | None
    fmt: str = "{:,}"
    interval: tuple[float, float] | None = None
    note: str = ""


@dataclass(frozen=True)
class Table:
    """A small table of rows; cells are numbers or text (text is escaped when rendered)."""

    key: str
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    formats: dict[str, str] = field(default_factory=dict)  # column -> format, e.g. {"failure rate": "{:.1%}"}


@dataclass(frozen=True)
class Plot:
    """A matplotlib figure, drawn later by ``draw(fig)`` on a fresh Figure of ``size`` inches."""

    key: str
    caption: str
    draw: Callable[["Figure"], None]
    size: tuple[float, float] = (7.5, 3.0)


@dataclass(frozen=True)
class Texts:
    """Texts shown side by side (an example chain's original, critique and revision), under a heading."""

    heading: str
    panels: list[tuple[str, str]]  # (panel title, text)
    note: str = ""


@dataclass(frozen=True)
class Note:
    """A sentence of explanation under a section's title."""

    text: str


Block = Union[Stat, Table, Plot, Texts, Note]


@dataclass
class Section:
    """One titled part of the page. With ``empty`` set it is a single line saying why there is nothing to show."""

    key: str  # anchor id, unique on the page
    title: str
    blocks: list[Block] = field(default_factory=list)
    empty: str | None = None

    @classmethod
    def nodata(cls, key: str, title: str, line: str) -> "Section":
        return cls(key, title, [], line)


@dataclass
class Group:
    """A part of the report (Generation, Preferences, Training): a heading over its sections."""

    key: str
    title: str
    sections: list[Section]
