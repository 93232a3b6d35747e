"""``blink templates build``: coadd exposures of the data repository into template tiles on the sky map.

Each input CCD goes through Blink's own ISR and calibration (:func:`calibrated_input`), is warped onto every
sky-map tile it reaches (:func:`pipeline.coadd.warp_to_tile`), and each touched tile is combined with outlier
rejection (:func:`pipeline.coadd.add_to_coadd`) and written with its PSF model, coverage and provenance
(:mod:`streamer.templates.tiles`). The band's tile index is rewritten at the end.

Incremental: a tile already built keeps its inputs, and a CCD-visit already in a tile's provenance is not
added again, so running the command again with new exposures improves the tiles it touches and leaves the
others as they are. The inputs of one run are held in memory (about 100 MB per CCD-visit) until their tiles
are written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

from pipeline.ccd import PipelineConfig, calibrate_ccd, calibrate_instcal
from pipeline.coadd import CoaddConfig, TileWarp, add_to_coadd, empty_coadd, selected, warp_to_tile
from pipeline.decam.header import CCD_HALF_DIAGONAL_DEG, read_exposure_info
from pipeline.decam.instcal import instcal_footprint
from pipeline.errors import BlinkError
from pipeline.skymap import tile as sky_tile
from pipeline.skymap import tiles_overlapping
from pipeline.types import CalibratedExposure
from schemas import datarepo
from streamer.decam.instcal_files import is_instcal_image
from streamer.decam.raw_files import list_ccds, read_primary_header, read_raw_ccd
from streamer.templates.tiles import read_coadd, read_tile_inputs, write_coadd
from streamer.worker.inputs import DataRepository
from streamer.worker.processor import raw_ccd_inputs, read_instcal_input

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    """What a build did."""

    tiles_written: list[int] = field(default_factory=list)
    inputs_added: int = 0
    inputs_skipped: int = 0
    """CCD-visits already in their tiles, left out by the seeing/depth cuts, or reaching no tile."""
    failures: list[tuple[str, int, str]] = field(default_factory=list)
    """(input path, CCDNUM, error) of CCD-visits that could not be calibrated."""


def calibrated_input(repo: DataRepository, relative: str, ccdnum: int, *, config: PipelineConfig
                     ) -> CalibratedExposure:
    """One input CCD of a template, calibrated by Blink's own ISR and calibration (a CP InstCal image: by
    Blink's calibration, :func:`pipeline.ccd.calibrate_instcal`).

    Parameters
    ----------
    repo : DataRepository
    relative : str
        The exposure's path inside the data root (a raw, or a CP InstCal image ``..._ooi_...``).
    ccdnum : int
    config : PipelineConfig

    Raises
    ------
    BlinkError
        The CCD cannot be read or calibrated (named, with its stage).
    """
    if is_instcal_image(relative):
        instcal = read_instcal_input(repo, relative, ccdnum)
        ra, dec, radius = instcal_footprint(instcal)
        return calibrate_instcal(instcal, repo.refcat_in(ra, dec, radius + 0.02), config=config)[0]
    inputs = raw_ccd_inputs(repo, read_raw_ccd(repo.resolve(relative), ccdnum), with_templates=False)
    exposure, _ = calibrate_ccd(inputs, config=config)
    return exposure


class _Build:
    """The state of one build: warps held per (band, tile) and what each tile already holds."""

    def __init__(self, repo: DataRepository, pipeline: PipelineConfig, config: CoaddConfig,
                 advance: Callable[[str], None] | None) -> None:
        self.repo, self.pipeline, self.config = repo, pipeline, config
        self.advance = advance or (lambda _: None)
        self.summary = BuildSummary()
        self.warps: dict[tuple[str, int], list[TileWarp]] = {}
        self.existing: dict[str, dict[int, Path]] = {}
        self.done: dict[tuple[str, int], set[tuple[int, int]]] = {}

    def tiles_of(self, band: str) -> dict[int, Path]:
        """Tiles of the band already built: tile id -> file."""
        if band not in self.existing:
            index_path = self.repo.root / datarepo.template_index_path(band)
            tiles: dict[int, Path] = {}
            if index_path.exists():
                index = Table.read(index_path, format="ascii.ecsv")
                tiles = {int(t): self.repo.resolve(str(p)) for t, p in zip(index["tile_id"], index["path"])}
            self.existing[band] = tiles
        return self.existing[band]

    def done_in(self, band: str, tile_id: int) -> set[tuple[int, int]]:
        """(visit, CCDNUM) already in a tile (built earlier or added in this run)."""
        key = (band, tile_id)
        if key not in self.done:
            path = self.tiles_of(band).get(tile_id)
            inputs = read_tile_inputs(path) if path is not None else Table()
            self.done[key] = {(int(v), int(c)) for v, c in zip(inputs["visit"], inputs["ccdnum"])} \
                if len(inputs) else set()
        return self.done[key]

    def add_ccd(self, relative: str, ccdnum: int) -> None:
        """Calibrate one input CCD and warp it onto every tile that does not hold it yet."""
        try:
            exposure = calibrated_input(self.repo, relative, ccdnum, config=self.pipeline)
        except BlinkError as err:
            log.warning("template input %s CCD %d left out: %s (%s)", relative, ccdnum, err, err.stage)
            self.summary.failures.append((relative, ccdnum, f"{type(err).__name__}: {err}"))
            return
        added = 0
        if selected(exposure, self.config):
            band, visit = exposure.info.band, exposure.info.expnum
            ny, nx = exposure.masked.image.shape
            ra, dec = exposure.wcs.all_pix2world((nx - 1) / 2.0, (ny - 1) / 2.0, 0)
            for tile_id in tiles_overlapping(float(ra), float(dec), CCD_HALF_DIAGONAL_DEG, self.config.skymap):
                if (visit, ccdnum) in self.done_in(band, tile_id):
                    continue
                warp = warp_to_tile(exposure, sky_tile(tile_id, self.config.skymap), config=self.config)
                if warp is not None:
                    self.warps.setdefault((band, tile_id), []).append(warp)
                    self.done_in(band, tile_id).add((visit, ccdnum))
                    added += 1
        self.summary.inputs_added += bool(added)
        self.summary.inputs_skipped += not added

    def write(self) -> None:
        """Combine and write every touched tile, then the bands' indexes."""
        for (band, tile_id), warps in sorted(self.warps.items()):
            path = self.tiles_of(band).get(tile_id)
            coadd = read_coadd(path, self.config.skymap) if path is not None else \
                empty_coadd(sky_tile(tile_id, self.config.skymap), band, config=self.config)
            coadd = add_to_coadd(coadd, warps, config=self.config)
            relative = datarepo.template_tile_path(band, tile_id)
            write_coadd(self.repo.root / relative, coadd)
            self.existing[band][tile_id] = self.repo.root / relative
            self.summary.tiles_written.append(tile_id)
            self.advance(f"tile {tile_id}")
        self.warps.clear()
        for band, tiles in self.existing.items():
            if tiles:
                _write_index(self.repo.root, band, sorted(tiles), self.config)


def build_templates(repo: DataRepository, inputs: Sequence[str], *, pipeline: PipelineConfig = PipelineConfig(),
                    config: CoaddConfig = CoaddConfig(), band: str | None = None,
                    advance: Callable[[str], None] | None = None) -> BuildSummary:
    """Coadd exposures into template tiles (see the module's description).

    Parameters
    ----------
    repo : DataRepository
        The data repository; tiles go to ``templates/<band>/`` inside it.
    inputs : sequence of str
        Exposure paths inside the data root (raws, or CP InstCal images).
    pipeline : PipelineConfig
        ISR and calibration options for the inputs.
    config : CoaddConfig
        Sky map, warp, rejection and selection.
    band : str, optional
        Only inputs of this band (all bands otherwise; one set of tiles per band).
    advance : callable, optional
        Called with a short description after each input CCD and each tile written (a progress bar).

    Returns
    -------
    BuildSummary
    """
    build = _Build(repo, pipeline, config, advance)
    for relative in inputs:
        info = read_exposure_info(read_primary_header(repo.resolve(relative)))
        if band is not None and info.band != band:
            continue
        for ccdnum in list_ccds(repo.resolve(relative)):
            build.add_ccd(relative, ccdnum)
            build.advance(f"{relative} CCD {ccdnum}")
    build.write()
    return build.summary


def _write_index(root: Path, band: str, tile_ids: list[int], config: CoaddConfig) -> None:
    """The band's tile index (schemas.datarepo), written whole."""
    rows = []
    for tile_id in tile_ids:
        t = sky_tile(tile_id, config.skymap)
        rows.append((tile_id, t.ra_deg, t.dec_deg, t.radius_deg, str(datarepo.template_tile_path(band, tile_id))))
    index = Table(rows=rows, names=("tile_id", "ra", "dec", "radius_deg", "path"),
                  dtype=(np.int64, float, float, float, str))
    path = root / datarepo.template_index_path(band)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".writing")
    index.write(scratch, format="ascii.ecsv", overwrite=True)
    scratch.replace(path)


def expand_inputs(repo: DataRepository, patterns: Sequence[str]) -> list[str]:
    """Exposure paths inside the data root matching paths or glob patterns (relative to it), sorted, once."""
    found: set[str] = set()
    for pattern in patterns:
        matches = sorted(repo.root.glob(pattern)) if any(ch in pattern for ch in "*?[") else [repo.resolve(pattern)]
        found.update(str(path.resolve().relative_to(repo.root)) for path in matches if path.is_file())
    return sorted(found)


def build_templates_with_progress(repo: DataRepository, inputs: Sequence[str], *, show: bool = True,
                                  **options) -> BuildSummary:
    """:func:`build_templates` with a rich progress bar over the input CCDs (and the tiles written)."""
    if not show:
        return build_templates(repo, inputs, **options)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    total = sum(len(list_ccds(repo.resolve(relative))) for relative in inputs)
    columns = (TextColumn("[bold]templates[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("", total=total)

        def advance(what: str) -> None:
            if what.startswith("tile "):
                progress.update(task, description=what)
            else:
                progress.update(task, advance=1, description=what)

        return build_templates(repo, inputs, advance=advance, **options)
