"""``northwind status --html PATH``: the markers of every day as one self-contained HTML page.

A table of days by steps (state in colour, duration, rows, a failure's reason), the step durations
per day as a bar chart and, per step, the rows of each table across the days as small bar charts.
Everything is inline (CSS and SVG drawn here): the page runs no script and fetches nothing, and
its Content-Security-Policy forbids both. Table names come from the source, so every name, reason
and path is escaped before it reaches the page.
"""

import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from northwind_elt import atomic
from northwind_elt.steps import STEPS, StepMarker

#: The colour of each state (text and cell border); an unknown state is grey.
STATE_COLOURS = {"success": "#2e7d32", "failed": "#c62828", "running": "#1565c0",
                 "dead": "#6a1b9a", "stale": "#ef6c00"}
#: The colour of each step's bars in the duration chart, in :data:`STEPS` order.
STEP_COLOURS = ("#4e79a7", "#59a14f", "#f28e2b", "#76b7b2", "#b07aa1", "#9c755f")
UNKNOWN_COLOUR = "#9e9e9e"
#: The duration chart's drawing area and the small per-table charts, in px.
CHART_WIDTH, CHART_HEIGHT = 900, 180
SPARK_WIDTH, SPARK_HEIGHT = 220, 44
#: The widest bar, in px, so that a few days do not make slabs.
MAX_BAR = 24
#: At most this many day labels under the duration chart (every k-th day beyond).
MAX_DAY_LABELS = 12

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#212121}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}h3{font-size:1em}
.meta{color:#616161}
table.days{border-collapse:collapse}
table.days th,table.days td{border:1px solid #e0e0e0;padding:4px 8px;vertical-align:top;
text-align:left}
table.days td .state{font-weight:600}
table.days td .duration,table.days td .rows{display:block;color:#424242;font-size:.9em}
table.days td .reason{display:block;color:#c62828;max-width:28em;overflow-wrap:anywhere}
td.missing{color:#9e9e9e}
.legend span{display:inline-block;margin-right:1em}
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
.tables{display:flex;flex-wrap:wrap;gap:12px}
figure.table-chart{margin:0;padding:6px;border:1px solid #eeeeee}
figure.table-chart figcaption{font-size:.85em;overflow-wrap:anywhere}
svg text{font:11px system-ui,sans-serif;fill:#616161}
rect.gap{fill:#e0e0e0}
"""


def escape(text: object) -> str:
    """``text`` safe in HTML text and in quoted attributes (names come from the source)."""
    return html.escape(str(text), quote=True)


@dataclass(frozen=True)
class StepView:
    """What the page shows of one step on one day."""

    day: str
    step: str
    state: str
    #: From start to finish; None while running or when a time is missing or unreadable.
    seconds: float | None
    rows: dict[str, int] = field(default_factory=dict)
    #: Why it failed, or why ``status`` derived its state (dead, stale); empty otherwise.
    reason: str = ""


def duration_seconds(started_at: str | None, finished_at: str | None) -> float | None:
    """Seconds from ``started_at`` to ``finished_at`` (ISO times), None if either is unknown."""
    try:
        started = dt.datetime.fromisoformat(started_at or "")
        finished = dt.datetime.fromisoformat(finished_at or "")
        return max(0.0, (finished - started).total_seconds())
    except (TypeError, ValueError):
        return None


def views_of(markers: Sequence[StepMarker], states: Sequence[tuple[str, str]]
             ) -> list[StepView]:
    """One :class:`StepView` per marker, with the state and reason ``status`` derived for it."""
    return [StepView(day=m.run_date, step=m.step, state=state,
                     seconds=duration_seconds(m.started_at, m.finished_at),
                     rows=dict(m.rows), reason=why or m.error or "")
            for m, (state, why) in zip(markers, states, strict=True)]


def format_seconds(seconds: float) -> str:
    """``< 1 s``, ``4 s``, ``4.2 s``, ``3 min 05 s``, ``1 h 02 min``.

    Markers keep whole seconds (:func:`northwind_elt.steps.now`): no decimals are made up.

    Example:
        >>> [format_seconds(s) for s in (0.4, 4, 4.2, 185, 3725)]
        ['< 1 s', '4 s', '4.2 s', '3 min 05 s', '1 h 02 min']
    """
    if seconds < 1:
        return "< 1 s"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds == int(seconds) else f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def ordered_steps(views: Sequence[StepView]) -> list[str]:
    """The pipeline's steps in run order, then any other step a marker names (sorted)."""
    named = {v.step for v in views}
    return [s for s in STEPS if s in named] + sorted(named - set(STEPS))


def step_colour(step: str, steps: Sequence[str]) -> str:
    """The colour of ``step``'s bars: by its place among ``steps``."""
    return STEP_COLOURS[steps.index(step) % len(STEP_COLOURS)]


def day_table(days: Sequence[str], steps: Sequence[str],
              by_key: dict[tuple[str, str], StepView]) -> str:
    """The days-by-steps table: state in colour, duration, total rows, reason."""
    head = "".join(f"<th>{escape(s)}</th>" for s in steps)
    lines = [f'<table class="days"><thead><tr><th>day</th>{head}</tr></thead><tbody>']
    for day in days:
        cells = []
        for step in steps:
            view = by_key.get((day, step))
            if view is None:
                cells.append(f'<td class="missing" data-step="{escape(step)}">not run</td>')
                continue
            colour = STATE_COLOURS.get(view.state, UNKNOWN_COLOUR)
            parts = [f'<span class="state" style="color:{colour}">{escape(view.state)}</span>']
            if view.seconds is not None:
                parts.append(f'<span class="duration">{escape(format_seconds(view.seconds))}</span>')
            if view.rows:
                parts.append(f'<span class="rows">{sum(view.rows.values()):,} rows</span>')
            if view.reason:
                parts.append(f'<span class="reason">{escape(view.reason)}</span>')
            cells.append(f'<td class="state-{escape(view.state)}" data-step="{escape(step)}" '
                         f'style="border-left:4px solid {colour}">{"".join(parts)}</td>')
        lines.append(f'<tr data-day="{escape(day)}"><th>{escape(day)}</th>{"".join(cells)}</tr>')
    lines.append("</tbody></table>")
    return "\n".join(lines)


def duration_chart(days: Sequence[str], steps: Sequence[str],
                   by_key: dict[tuple[str, str], StepView]) -> str:
    """Grouped bars: per day, one bar per step with its duration; a failed step's bar is red."""
    finished = [v.seconds for v in by_key.values() if v.seconds is not None]
    if not finished:
        return '<p class="empty">No step has finished yet: no durations to draw.</p>'
    longest = max(*finished, 1.0)  # steps all done within their first second still get bars
    left, bottom, top = 56, 22, 8
    width, height = CHART_WIDTH - left, CHART_HEIGHT - bottom - top
    group = width / len(days)
    bar = min(group * 0.8 / len(steps), MAX_BAR)
    every = max(1, -(-len(days) // MAX_DAY_LABELS))
    parts = [f'<svg class="durations" role="img" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" '
             f'width="{CHART_WIDTH}" height="{CHART_HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">'
             f'{escape(format_seconds(longest))}</text>',
             f'<text x="{left - 6}" y="{top + height}" text-anchor="end">0 s</text>',
             f'<line x1="{left}" y1="{top + height}" x2="{CHART_WIDTH}" y2="{top + height}" '
             'stroke="#bdbdbd"/>']
    for i, day in enumerate(days):
        x0 = left + i * group + (group - bar * len(steps)) / 2
        for j, step in enumerate(steps):
            view = by_key.get((day, step))
            if view is None or view.seconds is None:
                continue
            h = max(1.0, height * view.seconds / longest)
            colour = (STATE_COLOURS["failed"] if view.state == "failed"
                      else step_colour(step, steps))
            parts.append(f'<rect class="bar state-{escape(view.state)}" data-day="{escape(day)}" '
                         f'data-step="{escape(step)}" x="{x0 + j * bar:.2f}" '
                         f'y="{top + height - h:.2f}" width="{bar:.2f}" height="{h:.2f}" '
                         f'fill="{colour}"><title>{escape(day)} {escape(step)}: '
                         f'{escape(view.state)}, {escape(format_seconds(view.seconds))}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{left + (i + 0.5) * group:.2f}" y="{CHART_HEIGHT - 6}" '
                         f'text-anchor="middle">{escape(day)}</text>')
    parts.append("</svg>")
    legend = "".join(f'<span><i style="background:{step_colour(s, steps)}"></i>{escape(s)}</span>'
                     for s in steps)
    failed = f'<span><i style="background:{STATE_COLOURS["failed"]}"></i>failed</span>'
    return "".join(parts) + f'\n<p class="legend">{legend}{failed}</p>'


def table_chart(table: str, days: Sequence[str], rows_by_day: dict[str, int]) -> str:
    """One table's rows across ``days``: a bar per day, a grey stub where no count was recorded."""
    most = max(rows_by_day.values(), default=0) or 1
    slot = min(SPARK_WIDTH / len(days), MAX_BAR)
    bar, height = max(slot * 0.8, 0.5), SPARK_HEIGHT - 12
    parts = [f'<svg class="table-rows" role="img" viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}" '
             f'width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" xmlns="http://www.w3.org/2000/svg">']
    for i, day in enumerate(days):
        x = i * slot + (slot - bar) / 2
        if day in rows_by_day:
            count = rows_by_day[day]
            h = max(1.0, height * count / most)
            parts.append(f'<rect class="bar" data-day="{escape(day)}" x="{x:.2f}" '
                         f'y="{height - h:.2f}" width="{bar:.2f}" height="{h:.2f}" '
                         f'fill="#4e79a7"><title>{escape(day)}: {count:,} rows</title></rect>')
        else:
            parts.append(f'<rect class="gap" data-day="{escape(day)}" x="{x:.2f}" '
                         f'y="{height - 1}" width="{bar:.2f}" height="1">'
                         f'<title>{escape(day)}: no count</title></rect>')
    low, high = min(rows_by_day.values(), default=0), max(rows_by_day.values(), default=0)
    counts = f"{low:,}–{high:,}" if low != high else f"{high:,}"
    parts.append(f'<text x="{SPARK_WIDTH}" y="{SPARK_HEIGHT - 1}" text-anchor="end">'
                 f'{counts} rows</text></svg>')
    return (f'<figure class="table-chart" data-table="{escape(table)}">'
            f'<figcaption>{escape(table)}</figcaption>{"".join(parts)}</figure>')


def rows_charts(days: Sequence[str], steps: Sequence[str], views: Sequence[StepView]) -> str:
    """Per step that counted rows: one small chart per table of its rows across the days.

    A day's count comes from its marker whatever its state, except ``running`` (no count yet):
    a failed step's marker keeps no rows, so that day shows a stub.
    """
    sections = []
    for step in steps:
        counts: dict[str, dict[str, int]] = {}
        for view in views:
            if view.step == step and view.state != "running":
                for table, count in view.rows.items():
                    counts.setdefault(table, {})[view.day] = count
        if counts:
            charts = "".join(table_chart(t, days, counts[t]) for t in sorted(counts))
            sections.append(f'<section class="step-rows" data-step="{escape(step)}">'
                            f'<h3>{escape(step)}</h3><div class="tables">{charts}</div></section>')
    return "\n".join(sections) or '<p class="empty">No step has counted rows yet.</p>'


def render(views: Sequence[StepView], *, where: str, written_at: str) -> str:
    """The whole page for ``views`` (the markers of the data tree at ``where``)."""
    days = sorted({v.day for v in views})
    steps = ordered_steps(views)
    by_key = {(v.day, v.step): v for v in views}
    span = f"{days[0]} to {days[-1]}" if len(days) > 1 else (days[0] if days else "")
    title = f"Northwind pipeline: {len(days)} day{'s' * (len(days) != 1)}"
    head = ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta http-equiv="Content-Security-Policy" '
            "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>")
    meta = (f'<p class="meta">Data tree {escape(where)} · {escape(span)} · '
            f"written {escape(written_at)}</p>")
    if not views:
        body = f'<p class="empty">No step has run yet under {escape(where)}.</p>'
    else:
        body = "\n".join([
            "<h2>Steps per day</h2>", day_table(days, steps, by_key),
            "<h2>Step durations per day</h2>", duration_chart(days, steps, by_key),
            "<h2>Rows per table per day</h2>", rows_charts(days, steps, views)])
    return f"{head}\n<h1>{escape(title)}</h1>\n{meta}\n{body}\n</body></html>\n"


def write_page(path: str | Path, markers: Sequence[StepMarker],
               states: Sequence[tuple[str, str]], where: str) -> str:
    """Write the page of ``markers`` to the local ``path`` (atomically) and say so in one line.

    Args:
        path: A local file, even when the data tree is on object storage.
        markers: The markers ``status`` read, one per step and day.
        states: The state and reason ``status`` derived for each marker.
        where: The data tree's URL, shown on the page.

    Returns:
        The line to print: what was written where.
    """
    views = views_of(markers, states)
    written_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    atomic.write_bytes(Path(path), render(views, where=where, written_at=written_at).encode())
    days = len({v.day for v in views})
    return f"wrote {path}: {days} day{'s' * (days != 1)}, {len(views)} step markers"
