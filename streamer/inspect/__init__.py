"""Looking at a night: one DiaObject's history and light curve, and alerts with their cutouts (``blink lightcurve``,
``blink alerts show``); the Parquet export is :mod:`streamer.apdb.export`."""

from __future__ import annotations

__all__ = ["wide_console"]


def wide_console(min_width: int = 180):
    """A rich Console for wide tables: the terminal's width, or at least ``min_width`` columns when the output is
    a file or a pipe (where rich would assume 80 and fold every cell)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, min_width))
