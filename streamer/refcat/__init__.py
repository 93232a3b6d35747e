"""Blink's sky-indexed reference catalog: built from Gaia-archive files by ``blink refcat``, read by region."""

from streamer.refcat.index import build_index, read_gaia_file, read_partition

__all__ = ["build_index", "read_gaia_file", "read_partition"]
