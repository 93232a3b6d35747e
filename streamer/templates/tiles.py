"""Template tile files: read one into the pipeline's :class:`~pipeline.types.TemplateTile`, write a coadd.

Layout (see :mod:`schemas.datarepo`): HDU ``IMAGE`` (float32 nJy, TAN WCS), ``VARIANCE`` (nJy^2), ``MASK``
(int32 :class:`~pipeline.masks.MaskBit`), ``PSF`` ((k, n, n) float32 PSF images) and ``PSF_NODES`` (their
0-based tile pixel positions ``x``, ``y``) are what the worker reads. A coadd built by Blink adds ``WEIGHT``
(the sum of the input weights per pixel), ``COVERAGE`` (inputs per pixel), ``PSF_NODES`` columns ``weight``
and ``depth_mag`` and an ``INPUTS`` table (its provenance): what an incremental build needs to add exposures.

A built tile is stored cropped to the box its inputs cover (its WCS's CRPIX moved with it, so it is the same
sky-map projection); ``TILEX0``/``TILEY0`` give the box's corner in the full tile, which an incremental build
restores. Tiles are written to a temporary name and renamed into place, so that a worker's memory map of the old file
stays valid (the worker caches tiles by path).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from pipeline.coadd import CoaddTile
from pipeline.errors import InputError, TemplatePsfError
from pipeline.masks import MaskBit
from pipeline.skymap import SkyMapConfig, tile
from pipeline.types import TemplateTile, TilePsf

STAGE = "load_template"


def _plane(hdu: Any, kind: str) -> np.ndarray:
    """A tile plane: a read-only memory map where astropy can make one (else the data it read).

    Raises
    ------
    ValueError
        Not a 2-D array of the expected kind (``f``: float, ``i``: integer), or shorter than its header says.
    """
    data = hdu.data
    if data is None or data.ndim != 2 or data.dtype.kind != kind:
        raise ValueError(f"{hdu.name}: expected a 2-D {'float' if kind == 'f' else 'integer'} image, got "
                         f"{None if data is None else (data.dtype, data.shape)}")
    return data


def read_tile_psf(hdus: fits.HDUList, name: str) -> TilePsf:
    """The PSF model of an open tile file.

    Raises
    ------
    TemplatePsfError
        No ``PSF``/``PSF_NODES`` extension, or a PSF that is not usable.
    """
    if "PSF" not in hdus or "PSF_NODES" not in hdus:
        raise TemplatePsfError(f"template tile {name} has no PSF model (PSF and PSF_NODES extensions)",
                               stage=STAGE)
    nodes = hdus["PSF_NODES"].data
    images = hdus["PSF"].data
    if images is None or nodes is None:
        raise TemplatePsfError(f"template tile {name} has an empty PSF model", stage=STAGE)
    # A built tile lists every node of its grid; those no input reached have weight 0 and no PSF.
    used = np.asarray(nodes["weight"]) > 0 if "weight" in nodes.names else np.ones(len(nodes), bool)
    return TilePsf(images=np.asarray(images, dtype=np.float32)[used], x=np.asarray(nodes["x"], float)[used],
                   y=np.asarray(nodes["y"], float)[used])


def read_tile(path: Path, tile_id: int, name: str) -> TemplateTile:
    """Read a template tile, its planes memory-mapped in the file's byte order.

    Raises
    ------
    InputError
        Unreadable or malformed (``stage="load_template"``); :class:`TemplatePsfError` without a usable PSF.
    """
    try:
        # A CCD's warp reads (and converts) only the part of the tile it covers, so a worker holds page
        # cache, not six 160 MB tiles (pipeline.template).
        with fits.open(path, memmap=True) as hdus:
            image, variance, mask = (_plane(hdus[plane], kind) for plane, kind in
                                     (("IMAGE", "f"), ("VARIANCE", "f"), ("MASK", "i")))
            wcs = WCS(hdus["IMAGE"].header)
            psf = read_tile_psf(hdus, name)
    except TemplatePsfError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:  # TypeError: a truncated file's memory map
        raise InputError(f"unreadable template tile {name}: {err}", stage=STAGE) from err
    return TemplateTile(tile_id=tile_id, image=image, variance=variance, mask=mask, wcs=wcs, psf=psf)


def read_coadd(path: Path, skymap: SkyMapConfig) -> CoaddTile:
    """Read a tile that Blink built, with what an incremental build needs (weights, coverage, inputs).

    Raises
    ------
    InputError
        Not a Blink-built tile, or unreadable.
    """
    try:
        with fits.open(path, memmap=False) as hdus:
            header = hdus[0].header
            sky_tile = tile(int(header["TILEID"]), skymap)
            box = (slice(int(header["TILEY0"]), int(header["TILEY0"]) + hdus["IMAGE"].data.shape[0]),
                   slice(int(header["TILEX0"]), int(header["TILEX0"]) + hdus["IMAGE"].data.shape[1]))

            def full(plane: str, dtype: type, fill: float = 0) -> np.ndarray:
                out = np.full(sky_tile.shape, fill, dtype)
                out[box] = hdus[plane].data
                return out

            nodes = Table(hdus["PSF_NODES"].data)
            return CoaddTile(
                tile=sky_tile, band=str(header["BAND"]), image=full("IMAGE", np.float32),
                variance=full("VARIANCE", np.float32), mask=full("MASK", np.int32, int(MaskBit.NO_DATA)),
                weight=full("WEIGHT", np.float32), coverage=full("COVERAGE", np.int16),
                psf_images=np.asarray(hdus["PSF"].data, np.float64), psf_x=np.asarray(nodes["x"], float) + box[1].start,
                psf_y=np.asarray(nodes["y"], float) + box[0].start, psf_weight=np.asarray(nodes["weight"], float),
                inputs=Table(hdus["INPUTS"].data))
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise InputError(f"{path} is not a readable Blink-built template tile: {err}", stage="build_templates") \
            from err


def read_tile_inputs(path: Path) -> Table:
    """The provenance table (``INPUTS``) of a Blink-built tile, without reading its planes.

    Raises
    ------
    InputError
        Not a Blink-built tile, or unreadable.
    """
    try:
        with fits.open(path, memmap=True) as hdus:
            return Table(hdus["INPUTS"].data)
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise InputError(f"{path} is not a readable Blink-built template tile: {err}", stage="build_templates") \
            from err


def write_coadd(path: Path, coadd: CoaddTile) -> None:
    """Write a coadd tile, cropped to what its inputs cover (to a temporary name, then renamed into place)."""
    rows, cols = np.flatnonzero(coadd.coverage.any(axis=1)), np.flatnonzero(coadd.coverage.any(axis=0))
    if rows.size == 0:
        rows, cols = np.arange(1), np.arange(1)
    box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    header = coadd.tile.wcs[box].to_header()
    header["BUNIT"] = "nJy"
    primary = fits.Header()
    primary["TILEID"] = (coadd.tile.tile_id, "sky map tile id (pipeline.skymap)")
    primary["BAND"] = (coadd.band, "band of the coadd")
    primary["NINPUTS"] = (len(coadd.inputs), "input CCD-visits")
    primary["BUILDER"] = ("blink templates build", "made by")
    primary["TILEX0"] = (box[1].start, "first column of this box in the full tile")
    primary["TILEY0"] = (box[0].start, "first row of this box in the full tile")
    nodes = Table({"x": coadd.psf_x - box[1].start, "y": coadd.psf_y - box[0].start, "weight": coadd.psf_weight,
                   "depth_mag": coadd.depth_mag()})
    hdus = fits.HDUList([
        fits.PrimaryHDU(header=primary),
        fits.ImageHDU(coadd.image[box], header=header, name="IMAGE"),
        fits.ImageHDU(coadd.variance[box], header=header, name="VARIANCE"),
        fits.ImageHDU(coadd.mask[box], header=header, name="MASK"),
        fits.ImageHDU(coadd.weight[box], header=header, name="WEIGHT"),
        fits.ImageHDU(coadd.coverage[box], header=header, name="COVERAGE"),
        fits.ImageHDU(coadd.normalised_psf(), name="PSF"),
        fits.BinTableHDU(nodes, name="PSF_NODES"),
        fits.BinTableHDU(coadd.inputs, name="INPUTS"),
    ])
    hdus["VARIANCE"].header["BUNIT"] = "nJy**2"
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".writing")
    hdus.writeto(scratch, overwrite=True)
    os.replace(scratch, path)
