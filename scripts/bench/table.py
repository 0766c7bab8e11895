"""The fixed-width rows of the printed table (pure: a measurement in, a line out)."""

from __future__ import annotations

from .measure import Measurement


def megabytes(value: float) -> str:
    """Megabytes, whole."""
    return f"{value:,.0f}"



def rate(rows: int, seconds: float) -> str:
    """Rows per second, or ``-`` when the time is too short to divide by."""
    return f"{rows / seconds:,.0f}" if seconds > 0.005 else "-"



HEADER = (f"{'':<26}{'rows':>11}{'wall s':>9}{'start s':>9}{'data s':>9}{'rows/s':>12}"
          f"{'RSS MB':>8}{'tree MB':>9}  {'data/raw':>8}")



def step_line(step: str, m: Measurement, start: Measurement | None, raw: Measurement | None
              ) -> str:
    """One step's row: wall, start-up, data part, rows/s of the data part, RSS, ratio."""
    start_s = start.wall if start else 0.0
    data = max(m.wall - start_s, 0.0)
    ratio = f"{data / raw.wall:>7.1f}x" if raw and raw.wall > 0 and start else f"{'-':>8}"
    flag = "" if m.returncode == 0 else f"  FAILED (exit {m.returncode}, {m.log})"
    return (f"{step:<26}{m.rows:>11,}{m.wall:>9.2f}"
            f"{(f'{start_s:.2f}' if start else '-'):>9}{(f'{data:.2f}' if start else '-'):>9}"
            f"{rate(m.rows, data if start else m.wall):>12}{megabytes(m.rss_process_mb):>8}"
            f"{megabytes(m.rss_tree_mb):>9}  {ratio}{flag}")



def raw_line(m: Measurement) -> str:
    """One raw COPY's row."""
    return (f"{'  ' + m.name:<26}{m.rows:>11,}{m.wall:>9.2f}{'':>9}{m.wall:>9.2f}"
            f"{rate(m.rows, m.wall):>12}{megabytes(m.rss_process_mb):>8}{megabytes(m.rss_tree_mb):>9}")
