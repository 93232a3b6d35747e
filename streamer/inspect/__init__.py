"""Looking at a night: one DiaObject's history and light curve, and alerts with their cutouts (``blink lightcurve``,
``blink alerts show``); the Parquet export is :mod:`streamer.apdb.export`."""

from __future__ import annotations

import io
from pathlib import Path

__all__ = ["png_bytes", "pyplot", "save_png", "wide_console"]


def wide_console(min_width: int = 180):
    """A rich Console for wide tables: the terminal's width, or at least ``min_width`` columns when the output is
    a file or a pipe (where rich would assume 80 and fold every cell)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, min_width))


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, *, dpi: int = 90) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return buf.getvalue()


def save_png(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Write the figure to the PNG ``path`` (folders created) and close it; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
