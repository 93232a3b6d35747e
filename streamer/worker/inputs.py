"""Reads a Blink data repository (see :mod:`schemas.datarepo`) into the pipeline's input types.

Calibrations, the reference catalog and template indexes are cached per process: a long-running worker
reads them once.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

from pipeline.errors import InputError, NoWorkError
from pipeline.types import TemplateTile
from schemas import datarepo
from streamer.apdb.sky import angular_distance_deg, cover_disc
from streamer.decam.camera_tables import known_defects
from streamer.refcat.index import empty_catalog, read_partition
from streamer.templates.tiles import read_tile

log = logging.getLogger(__name__)

CALIBRATION_CACHE_SIZE = 8
"""Per-CCD planes (bias, flat, defect mask; 8-34 MB each) kept per kind. A worker can see all 62 CCDs, so
caching them all would hold 4 GB; a CCD-visit needs one of each."""

REFCAT_CACHE_SIZE = 16
"""Reference-catalog partitions kept (1.8-degree HEALPix pixels; a CCD touches one to four)."""

TILE_CACHE_SIZE = 8
"""Template tiles kept (about 170 MB each): a CCD needs up to six. The bound is what keeps a long-running
worker's memory flat (64 tiles grew a worker to 11 GB over a 62-CCD exposure, and the OOM killer stopped it)."""


class DataRepository:
    """Read-only access to calibrations, reference catalog and templates under a data root.

    Parameters
    ----------
    root : path-like
        The data root. Every path an event names is resolved inside it.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise InputError(f"data root {self.root} does not exist", stage="datastore")

    def resolve(self, relative: str | Path) -> Path:
        """Return the absolute path of ``relative`` inside the root, symbolic links resolved.

        The one path resolution of the worker: every file it opens (an event's raw, calibrations, reference
        catalog, templates) is found through it.

        Raises
        ------
        InputError
            The path is absolute or resolves (through ``..`` or a symbolic link) outside the root, or cannot
            be a path (``stage="datastore"``).
        """
        try:
            path = (self.root / relative).resolve()
        except (OSError, ValueError) as err:  # ValueError: an embedded NUL byte
            raise InputError(f"path {str(relative)!r} cannot be resolved: {err}", stage="datastore") from err
        if not path.is_relative_to(self.root):
            raise InputError(f"path {str(relative)!r} escapes the data root", stage="datastore")
        return path

    def _calib_plane(self, relative: Path, ccdnum: int, what: str) -> np.ndarray:
        path = self.resolve(relative)
        if not path.exists():
            raise InputError(f"missing {what}: {relative}", stage="load_calibrations")
        try:
            with fits.open(path, memmap=False) as hdus:
                for hdu in hdus[1:]:
                    if int(hdu.header.get("CCDNUM", -1)) == ccdnum:
                        data = np.asarray(hdu.data, dtype=np.float32)
                        break
                else:
                    raise InputError(f"{what} {relative} has no CCD {ccdnum}", stage="load_calibrations")
        except (OSError, ValueError, TypeError) as err:
            raise InputError(f"unreadable {what} {relative}: {err}", stage="load_calibrations") from err
        if not np.isfinite(data).all():
            raise InputError(f"{what} {relative} CCD {ccdnum} has non-finite pixels", stage="load_calibrations")
        return data

    @functools.lru_cache(maxsize=CALIBRATION_CACHE_SIZE)
    def bias(self, ccdnum: int) -> np.ndarray:
        """Master bias of one CCD (ADU)."""
        return self._calib_plane(datarepo.bias_path(), ccdnum, "master bias")

    @functools.lru_cache(maxsize=CALIBRATION_CACHE_SIZE)
    def flat(self, band: str, ccdnum: int) -> np.ndarray:
        """Master flat of one CCD in one band."""
        return self._calib_plane(datarepo.flat_path(band), ccdnum, f"{band}-band master flat")

    @functools.lru_cache(maxsize=CALIBRATION_CACHE_SIZE)
    def defects(self, ccdnum: int, mjd: float) -> np.ndarray | None:
        """Known-defect mask of a CCD at a date, from the camera's defect lists."""
        try:
            return known_defects(ccdnum, mjd)
        except (OSError, KeyError, ValueError) as err:
            log.warning("no defect list for CCD %d: %s", ccdnum, err)
            return None

    @functools.cached_property
    def refcat_index(self) -> Table:
        """The reference catalog's partition index (``pixel``, ``n_stars``, ``path``; written by
        ``blink refcat``).

        Raises
        ------
        InputError
            No index (``blink refcat`` was not run on this root) or an unreadable one.
        """
        path = self.resolve(datarepo.refcat_index_path())
        if not path.exists():
            raise InputError(f"no reference catalog index {datarepo.refcat_index_path()}: run `blink refcat "
                             f"<folder of Gaia files> --out {self.root}`", stage="load_refcat")
        try:
            index = Table.read(path, format="ascii.ecsv")
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"unreadable reference catalog index: {err}", stage="load_refcat") from err
        if int(index.meta.get("REFCAT_NSIDE", -1)) != datarepo.REFCAT_NSIDE:
            raise InputError(f"reference catalog index is partitioned at nside {index.meta.get('REFCAT_NSIDE')}, "
                             f"not {datarepo.REFCAT_NSIDE}: run `blink refcat` again", stage="load_refcat")
        return index

    @functools.lru_cache(maxsize=REFCAT_CACHE_SIZE)
    def refcat_partition(self, pixel: int) -> Table:
        """One partition of the reference catalog (Gaia-archive columns), cached."""
        return read_partition(self.resolve(datarepo.refcat_partition_path(pixel)))

    def refcat_in(self, ra_deg: float, dec_deg: float, radius_deg: float) -> Table:
        """Gaia stars (positions at their ``ref_epoch``) within a circle: only the partitions it touches are read.

        Raises
        ------
        InputError
            No index, or an unreadable partition.
        """
        index = self.refcat_index
        touched = np.intersect1d(cover_disc(datarepo.REFCAT_NSIDE, ra_deg, dec_deg, radius_deg),
                                 np.asarray(index["pixel"], np.int64))
        parts = [self.refcat_partition(int(p)) for p in touched]
        if not parts:
            return empty_catalog()
        cat = vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else parts[0]
        return cat[angular_distance_deg(cat["ra"], cat["dec"], ra_deg, dec_deg) <= radius_deg]

    @functools.lru_cache(maxsize=8)
    def template_index(self, band: str) -> Table:
        """Tile index of the band's templates.

        Raises
        ------
        NoWorkError
            The band has no templates (no index): nothing to subtract, like a CCD no tile covers.
        """
        path = self.resolve(datarepo.template_index_path(band))
        if not path.exists():
            raise NoWorkError(f"no {band}-band templates ({datarepo.template_index_path(band)} missing)",
                              stage="load_template")
        return Table.read(path, format="ascii.ecsv")

    @functools.lru_cache(maxsize=TILE_CACHE_SIZE)
    def _tile(self, relative: str, tile_id: int) -> TemplateTile:
        # Tiles must be replaced by rename, not rewritten in place (README): the planes are memory maps.
        return read_tile(self.resolve(relative), tile_id, relative)

    def templates_in(self, band: str, ra_deg: float, dec_deg: float, radius_deg: float) -> list[TemplateTile]:
        """Template tiles whose circumscribed circle meets the given circle, nearest first.

        Raises
        ------
        NoWorkError
            No template of the band, or none near the circle (``stage="load_template"``).
        InputError
            A tile is unreadable.
        """
        index = self.template_index(band)
        sep_deg = angular_distance_deg(index["ra"], index["dec"], ra_deg, dec_deg)
        near = np.flatnonzero(sep_deg <= radius_deg + np.asarray(index["radius_deg"]))
        near = near[np.argsort(sep_deg[near])]
        if near.size == 0:
            raise NoWorkError(f"no {band}-band template covers ({ra_deg:.4f}, {dec_deg:.4f})",
                              stage="load_template")
        return [self._tile(str(index["path"][i]), int(index["tile_id"][i])) for i in near]
