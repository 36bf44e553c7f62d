"""The page builder: report groups and sections -> one self-contained HTML page.

Self-contained means the page fetches nothing: the CSS is inline, the figures are PNG data URIs, there is no
script and no web font (the system's sans-serif is used). So it opens from a file, offline, attached to a ticket
or a mail. Every string that reaches the page goes through ``esc`` here, and the sections produce no markup
(``model.py``), so text from the database (prompts, model outputs, error messages) can never become markup.

The markup carries stable hooks for scripts and tests: ``data-stat``/``data-value`` on each headline number,
``data-table`` on tables, ``data-figure`` on figures and ``data-status="ok"|"empty"`` on each section.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from itertools import groupby
from typing import Any, Callable

from rlaif.report.model import Block, Group, Note, Plot, Section, Stat, Table, Texts

LONG_CELL = 40  # table text longer than this may wrap; shorter text (ids, names, dates) stays on one line
CSS = """
:root { --ink: #1f2328; --muted: #5c6470; --line: #d8dde3; --soft: #f4f6f8; --accent: #3b6ea5; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.45;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
h2 { font-size: 1.35rem; margin: 40px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.08rem; margin: 26px 0 6px; }
h4 { font-size: 0.95rem; margin: 14px 0 6px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.meta, .note, figcaption, caption { color: var(--muted); font-size: 0.9rem; }
.nodata { color: var(--muted); font-style: italic; margin: 2px 0 0; }
section.empty h3 { margin-bottom: 0; }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 18px;
          margin: 18px 0 8px; columns: 3 240px; column-gap: 28px; }
nav.toc ol { margin: 0; padding-left: 18px; }
nav.toc > ol > li { break-inside: avoid; margin-bottom: 6px; font-weight: 600; }
nav.toc li li { font-weight: 400; font-size: 0.92rem; }
nav.toc .empty-mark { color: var(--muted); font-size: 0.8rem; }
dl.stats { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 8px;
           margin: 10px 0 12px; }
dl.stats div { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; }
dl.stats dt { color: var(--muted); font-size: 0.82rem; }
dl.stats dd { margin: 0; font-size: 1.15rem; font-weight: 600; font-variant-numeric: tabular-nums; }
dl.stats dd small { font-weight: 400; color: var(--muted); font-size: 0.8rem; }
.scroll { overflow-x: auto; margin: 8px 0 12px; }
table { border-collapse: collapse; font-size: 0.88rem; min-width: 40%; }
caption { text-align: left; padding-bottom: 4px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { white-space: nowrap; }
td.long { min-width: 240px; max-width: 520px; overflow-wrap: anywhere; }
figure { margin: 10px 0 16px; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 4px; }
.texts { border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px 12px; margin: 12px 0; }
.panels { display: grid; grid-auto-flow: column; grid-auto-columns: minmax(0, 1fr); gap: 10px; }
.panel h5 { margin: 4px 0; font-size: 0.82rem; color: var(--muted); text-transform: uppercase;
            letter-spacing: 0.03em; }
.panel div { background: var(--soft); border-radius: 4px; padding: 6px 8px; font-size: 0.86rem;
             white-space: pre-wrap; overflow-wrap: anywhere; max-height: 260px; overflow-y: auto; }
footer { margin-top: 48px; color: var(--muted); font-size: 0.85rem; border-top: 1px solid var(--line);
         padding-top: 8px; }
"""


def esc(value: Any) -> str:
    """Text for the page: HTML-escaped, quotes included (it may sit in an attribute)."""
    return html.escape(str(value), quote=True)


def number(value: Any) -> str:
    """A table cell or a value as text: integers with separators, floats to 3 significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def _stat_text(stat: Stat) -> str:
    if stat.value is None:
        return "—"
    text = esc(stat.fmt.format(stat.value))
    if stat.interval:
        lo, hi = stat.interval
        text += f" <small>[{esc(stat.fmt.format(lo))}, {esc(stat.fmt.format(hi))}]</small>"
    return text


def _stats(stats: list[Stat]) -> str:
    items = []
    for s in stats:
        title = f' title="{esc(s.note)}"' if s.note else ""
        items.append(f'<div{title}><dt>{esc(s.label)}</dt>'
                     f'<dd data-stat="{esc(s.key)}" data-value="{esc(repr(s.value))}">{_stat_text(s)}</dd></div>')
    return '<dl class="stats">' + "".join(items) + "</dl>"


def _cell(value: Any, fmt: str | None = None) -> str:
    text = fmt.format(value) if fmt and value is not None else number(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        kind = "num"
    else:
        kind = "long" if len(text) > LONG_CELL else "text"  # short labels never break mid-word
    return f'<td class="{kind}">{esc(text)}</td>'


def _table(t: Table) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in t.columns)
    formats = [t.formats.get(c) for c in t.columns]
    body = "".join("<tr>" + "".join(_cell(v, f) for v, f in zip(row, formats, strict=True)) + "</tr>"
                   for row in t.rows)
    caption = f"<caption>{esc(t.caption)}</caption>" if t.caption else ""
    return (f'<div class="scroll"><table data-table="{esc(t.key)}">{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _plot(p: Plot, draw: Callable[[Plot], tuple[str, int, int]]) -> str:
    uri, width, height = draw(p)
    return (f'<figure data-figure="{esc(p.key)}"><img src="{uri}" width="{width}" height="{height}" '
            f'alt="{esc(p.caption)}"><figcaption>{esc(p.caption)}</figcaption></figure>')


def _texts(t: Texts) -> str:
    panels = "".join(f"<div class=\"panel\"><h5>{esc(title)}</h5><div>{esc(text)}</div></div>"
                     for title, text in t.panels)
    note = f'<p class="note">{esc(t.note)}</p>' if t.note else ""
    return f'<div class="texts"><h4>{esc(t.heading)}</h4>{note}<div class="panels">{panels}</div></div>'


def _blocks(blocks: list[Block], draw: Callable[[Plot], tuple[str, int, int]]) -> str:
    out = []
    for is_stat, run in groupby(blocks, key=lambda b: isinstance(b, Stat)):
        if is_stat:
            out.append(_stats(list(run)))  # neighbouring numbers share one grid
            continue
        for b in run:
            if isinstance(b, Table):
                out.append(_table(b))
            elif isinstance(b, Plot):
                out.append(_plot(b, draw))
            elif isinstance(b, Texts):
                out.append(_texts(b))
            elif isinstance(b, Note):
                out.append(f'<p class="note">{esc(b.text)}</p>')
            else:
                raise TypeError(f"not a report block: {b!r}")
    return "".join(out)


def _section(s: Section, draw: Callable[[Plot], tuple[str, int, int]]) -> str:
    if s.empty is not None:
        return (f'<section class="section empty" id="{esc(s.key)}" data-status="empty"><h3>{esc(s.title)}</h3>'
                f'<p class="nodata">{esc(s.empty)}</p></section>')
    return (f'<section class="section" id="{esc(s.key)}" data-status="ok"><h3>{esc(s.title)}</h3>'
            f"{_blocks(s.blocks, draw)}</section>")


def _toc(groups: list[Group]) -> str:
    items = []
    for g in groups:
        subs = "".join(
            f'<li><a href="#{esc(s.key)}">{esc(s.title)}</a>'
            + (' <span class="empty-mark">(no data)</span>' if s.empty is not None else "") + "</li>"
            for s in g.sections)
        items.append(f'<li><a href="#{esc(g.key)}">{esc(g.title)}</a><ol>{subs}</ol></li>')
    return '<nav class="toc"><ol>' + "".join(items) + "</ol></nav>"


def render_page(groups: list[Group], *, title: str, meta: list[str], footer: str,
                draw: Callable[[Plot], tuple[str, int, int]]) -> str:
    """The whole page. ``draw`` turns a Plot into (data URI, width, height): figures.render in use."""
    keys = [s.key for g in groups for s in g.sections] + [g.key for g in groups]
    if len(set(keys)) != len(keys):
        raise ValueError(f"report anchors must be unique: {sorted(keys)}")
    body = "".join(f'<section class="group" id="{esc(g.key)}"><h2>{esc(g.title)}</h2>'
                   + "".join(_section(s, draw) for s in g.sections) + "</section>" for g in groups)
    meta_html = "".join(f'<p class="meta">{esc(line)}</p>' for line in meta)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>"
            f"<body><main><header><h1>{esc(title)}</h1>{meta_html}</header>{_toc(groups)}{body}"
            f"<footer>{esc(footer)}</footer></main></body></html>\n")
