"""Drawing the report's plots with matplotlib, into PNG data URIs.

matplotlib is imported here, inside the functions, so ``import rlaif`` and ``rlaif --help`` never load it. Plots
use ``matplotlib.figure.Figure`` directly rather than pyplot: no global figure registry, no GUI backend to pick
(the Agg canvas draws the PNG), nothing left open between reports. PNG rather than SVG: a histogram of 10,000
pairs is a few tens of KB as an image but megabytes as vector paths, and the text is drawn into the image, so
the page needs no font from anywhere.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from rlaif.report.model import Plot

DPI = 150  # drawn at 1.5x the displayed size, so the text stays sharp on high-density laptop screens
SHOWN_DPI = 100  # displayed size in CSS pixels = inches * 100
COLOURS = ["#3b6ea5", "#d9822b", "#4f9d69", "#b5485d", "#7d6bb3", "#8c7a5b", "#3f9aa8", "#9a9a3a"]
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "axes.prop_cycle": None,  # filled in by render(), once cycler is importable
    "figure.dpi": SHOWN_DPI, "savefig.dpi": DPI,
}


def render(plot: "Plot") -> tuple[str, int, int]:
    """Draw a plot; returns (data URI of the PNG, displayed width and height in CSS pixels)."""
    from matplotlib import cycler, rc_context  # matplotlib's own re-export of the cycler package
    from matplotlib.figure import Figure

    style = dict(STYLE, **{"axes.prop_cycle": cycler(color=COLOURS)})
    with rc_context(style):
        fig = Figure(figsize=plot.size, layout="constrained")
        plot.draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})  # no version stamp in the page
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    width, height = plot.size
    return uri, round(width * SHOWN_DPI), round(height * SHOWN_DPI)


def hbar(ax: "Axes", labels: Sequence[str], values: Sequence[float], *, colour: str = COLOURS[0],
         xlabel: str = "") -> None:
    """Horizontal bars, largest on top, each labelled with its value."""
    order = list(range(len(labels)))[::-1]
    bars = ax.barh([labels[i] for i in order], [values[i] for i in order], color=colour)
    ax.bar_label(bars, fmt="{:,.0f}", padding=2, fontsize=8)
    counts_axis(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)
    ax.margins(x=0.12)


def counts_axis(axis) -> None:
    """Whole-number ticks on an axis of counts (no 0.5 rows)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def reliability(ax, curves: dict[str, list[tuple[float, float, int]]]) -> None:
    """Calibration curves: per series, bins of (mean predicted probability, observed frequency, count)."""
    ax.plot([0, 1], [0, 1], color="#bbb", linestyle="--", linewidth=0.8)
    for i, (name, bins) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        ax.plot([b[0] for b in bins], [b[1] for b in bins], marker="o", color=colour, label=name)
        for x, y, n in bins:
            ax.annotate(f"{n:,}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7, color=colour)
    ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel="predicted P(response_a better)",
           ylabel="observed frequency")  # a little room, so points at 0 and 1 show whole
    ax.set_aspect("equal")
    ax.legend(loc="upper left")
