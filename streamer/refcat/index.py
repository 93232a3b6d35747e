"""Build and read Blink's sky-indexed reference catalog (layout in :mod:`schemas.datarepo`).

``blink refcat SRC_DIR`` reads every Gaia-archive file in a folder (FITS, CSV or ECSV, any number of
chunks, gzipped or not), keeps the columns the pipeline uses (:data:`pipeline.refcat.GAIA_COLUMNS`),
drops duplicate sources (chunks that overlap) and writes one FITS table per HEALPix pixel (nested, nside
:data:`schemas.datarepo.REFCAT_NSIDE`) with an index of the pixels. The worker then reads only the
partitions a CCD's circle touches.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

from pipeline.errors import InputError
from pipeline.refcat import GAIA_COLUMNS
from schemas import datarepo
from streamer.apdb.sky import ang2pix_nested

log = logging.getLogger(__name__)

__all__ = ["GAIA_SUFFIXES", "build_index", "empty_catalog", "gaia_files", "read_gaia_file", "read_partition"]

GAIA_SUFFIXES = {".fits": "fits", ".fit": "fits", ".csv": "ascii.csv", ".ecsv": "ascii.ecsv"}
"""File name endings read (each also gzipped, ``.gz``), and their astropy formats."""

_FLOAT32 = {"ra_error", "dec_error", "pmra", "pmdec", "pmra_error", "pmdec_error", "phot_g_mean_mag",
            "phot_bp_mean_mag", "phot_rp_mean_mag", "phot_g_mean_flux_over_error",
            "phot_bp_mean_flux_over_error", "phot_rp_mean_flux_over_error"}
"""Columns stored as float32 (ra, dec and ref_epoch stay float64, source_id int64)."""


def _format(path: Path) -> str | None:
    """The astropy format of a Gaia file, or None for a file that is not one."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return GAIA_SUFFIXES.get(suffixes[-1]) if suffixes else None


def _as_float(table: Table, name: str) -> np.ndarray:
    """A column as float64, masked or empty entries NaN."""
    return np.ma.filled(np.ma.asarray(table[name], dtype=float), np.nan)


def read_gaia_file(path: str | Path) -> Table:
    """One Gaia-archive file, reduced to :data:`pipeline.refcat.GAIA_COLUMNS` (NaN where Gaia has none).

    A missing ``phot_<x>_mean_flux_over_error`` is made from ``phot_<x>_mean_flux`` and
    ``phot_<x>_mean_flux_error`` when the file has those (the archive's other spelling of the errors).

    Raises
    ------
    InputError
        The file is unreadable, not a table, or lacks a needed column (``stage="refcat_index"``); the
        message names the file.
    """
    path = Path(path)
    fmt = _format(path)
    if fmt is None:
        raise InputError(f"{path}: not a FITS, CSV or ECSV file", stage="refcat_index")
    try:
        table = Table.read(path, format=fmt)
    except (OSError, ValueError, TypeError, KeyError, IndexError, EOFError) as err:  # astropy's many failures
        raise InputError(f"{path}: unreadable Gaia file: {err}", stage="refcat_index") from err
    for band in ("g", "bp", "rp"):
        foe, flux = f"phot_{band}_mean_flux_over_error", f"phot_{band}_mean_flux"
        if foe not in table.colnames and {flux, f"{flux}_error"} <= set(table.colnames):
            with np.errstate(divide="ignore", invalid="ignore"):
                table[foe] = _as_float(table, flux) / _as_float(table, f"{flux}_error")
    missing = [c for c in GAIA_COLUMNS if c not in table.colnames]
    if missing:
        raise InputError(f"{path}: not a Gaia-archive table, lacks columns {missing}", stage="refcat_index")
    out = Table()
    try:
        out["source_id"] = np.asarray(table["source_id"], dtype=np.int64)
        for name in GAIA_COLUMNS[1:]:
            out[name] = _as_float(table, name).astype(np.float32 if name in _FLOAT32 else np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: a Gaia column is not numeric: {err}", stage="refcat_index") from err
    ra, dec = np.asarray(out["ra"]), np.asarray(out["dec"])
    bad = ~(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0) & np.isfinite(np.asarray(out["ref_epoch"])))
    if bad.any():
        raise InputError(f"{path}: {int(bad.sum())} rows without a valid ra, dec or ref_epoch", stage="refcat_index")
    out["ra"] = ra % 360.0
    return out


def gaia_files(src_dir: str | Path) -> list[Path]:
    """The Gaia-archive files of a folder, sorted.

    Raises
    ------
    InputError
        The folder does not exist or holds no FITS, CSV or ECSV file.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise InputError(f"{src}: no such folder", stage="refcat_index")
    files = sorted(p for p in src.iterdir() if p.is_file() and _format(p) is not None)
    if not files:
        raise InputError(f"{src}: no Gaia-archive file (*.fits, *.csv, *.ecsv, gzipped or not)",
                         stage="refcat_index")
    return files


def build_index(src_dir: str | Path, root: str | Path, *, progress: bool = False) -> Table:
    """Index every Gaia-archive file of ``src_dir`` into the data root ``root``.

    The rows of all files are held in memory (about 90 bytes per star) and written one partition per
    HEALPix pixel; an earlier index under ``root`` is replaced as a whole once the new one is written.

    Parameters
    ----------
    src_dir : path-like
        Folder of Gaia-archive files.
    root : path-like
        Data root to write ``refcat/`` into.
    progress : bool
        Show a rich progress bar.

    Returns
    -------
    Table
        The index (``pixel``, ``n_stars``, ``path``).

    Raises
    ------
    InputError
        A file is unreadable or not a Gaia-archive table, or the folder holds none.
    """
    files = gaia_files(src_dir)
    root = Path(root)
    tables = []
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress()
        bar.start()
        task = bar.add_task("blink refcat", total=len(files))
    try:
        for path in files:
            tables.append(read_gaia_file(path))
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    stars = vstack(tables, metadata_conflicts="silent")
    _, first = np.unique(np.asarray(stars["source_id"]), return_index=True)
    stars = stars[first]  # sorted by source_id, duplicates from overlapping chunks dropped
    index = _write_partitions(stars, root)
    log.info("indexed %d Gaia stars from %d files into %d partitions under %s", len(stars), len(files),
             len(index), root / datarepo.refcat_index_path().parent)
    return index


def _write_partitions(stars: Table, root: Path) -> Table:
    """Write the partitions and the index beside the old ones, then swap them in."""
    final = root / datarepo.refcat_partition_path(0).parent
    staging = final.with_name(final.name + f".new-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pixels = ang2pix_nested(datarepo.REFCAT_NSIDE, np.asarray(stars["ra"]), np.asarray(stars["dec"]))
    order = np.argsort(pixels, kind="stable")
    unique, starts, counts = np.unique(pixels[order], return_index=True, return_counts=True)
    for pixel, start, count in zip(unique, starts, counts):
        part = stars[order[start:start + count]]
        name = datarepo.refcat_partition_path(int(pixel)).name
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(part, name="GAIA")]).writeto(staging / name)
    index = Table({"pixel": unique.astype(np.int64), "n_stars": counts.astype(np.int64),
                   "path": [str(datarepo.refcat_partition_path(int(p))) for p in unique]})
    index.meta["REFCAT_NSIDE"] = datarepo.REFCAT_NSIDE
    index.meta["SCHEME"] = "nested"
    index_path = root / datarepo.refcat_index_path()
    old = final.with_name(final.name + f".old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    tmp = index_path.with_name(index_path.name + ".tmp")
    index.write(tmp, format="ascii.ecsv", overwrite=True)
    tmp.replace(index_path)
    return index


def empty_catalog() -> Table:
    """A catalog with the partitions' columns and no row (a circle no partition touches)."""
    return Table({name: np.zeros(0, np.int64 if name == "source_id" else np.float32 if name in _FLOAT32
                                 else np.float64) for name in GAIA_COLUMNS})


def read_partition(path: str | Path) -> Table:
    """One partition of the index.

    Raises
    ------
    InputError
        The partition is missing or unreadable (``stage="load_refcat"``).
    """
    try:
        return Table.read(path, hdu="GAIA", format="fits")
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise InputError(f"unreadable reference-catalog partition {path}: {err}", stage="load_refcat") from err
