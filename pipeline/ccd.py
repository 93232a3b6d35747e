"""The per-CCD pipeline, composed in order: ISR -> calibrate -> template -> subtract -> detect ->
reliability -> associate -> forced photometry -> cutouts. Pure: inputs in, outputs out.

A Community Pipeline InstCal CCD (:class:`pipeline.decam.instcal.InstCalInputs`) skips ISR (the CP did it):
:func:`calibrate_instcal` converts it to electrons and calibrates it from its TPV WCS; every later stage is the
same for both products."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from astropy.table import Table, vstack
from pydantic import BaseModel, ConfigDict, Field

from pipeline.associate import AssociationConfig, associate, history_with, summarize_objects
from pipeline.astrometry import pixel_scale_arcsec
from pipeline.calibrate import CalibrateConfig, calibrate
from pipeline.coadd import CoaddConfig
from pipeline.cutouts import FLUX_QUANTIZATION, make_cutouts
from pipeline.decam.camera import field_angle_model
from pipeline.decam.header import header_wcs
from pipeline.decam.instcal import InstCalCcd, InstCalInputs, instcal_electrons, tpv_field_angles
from pipeline.detect import DetectConfig, detect_dia_sources
from pipeline.errors import AlgorithmError, BlinkError, InputError
from pipeline.forced import ForcedConfig, forced_photometry
from pipeline.isr import IsrConfig, run_isr
from pipeline.refcat import RefcatConfig, reference_stars
from pipeline.reliability import ReliabilityConfig, ReliabilityModel, score
from pipeline.subtract import SubtractConfig, SubtractionResult, subtract
from pipeline.template import TemplateConfig, warp_template
from pipeline.types import CalibratedExposure, CcdInputs, CcdOutputs, MaskedImage

_T = TypeVar("_T")

log = logging.getLogger(__name__)


class PipelineConfig(BaseModel):
    """Configuration of every stage of the per-CCD pipeline (frozen; a misspelled option is an error)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    isr: IsrConfig = IsrConfig()
    refcat: RefcatConfig = RefcatConfig()
    calibrate: CalibrateConfig = CalibrateConfig()
    template: TemplateConfig = TemplateConfig()
    subtract: SubtractConfig = SubtractConfig()
    detect: DetectConfig = DetectConfig()
    reliability: ReliabilityConfig = ReliabilityConfig()
    association: AssociationConfig = AssociationConfig()
    forced: ForcedConfig = ForcedConfig()
    coadd: CoaddConfig = CoaddConfig()
    do_cutouts: bool = Field(True, description="Make science/template/difference cutouts for alerts.")
    cutout_flux_quantization: float | None = Field(
        FLUX_QUANTIZATION, gt=0, description="Cutout IMAGE steps per noise sigma (error at most half a step, see "
                                             "pipeline.cutouts); None: lossless float32 (larger alerts).")
    use_camera_model: bool = Field(True, description="Start the astrometric fit from DECam's nominal optical "
                                                     "distortion (fit only an affine map on top of it).")


@contextmanager
def _stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Time a stage and tag any Blink error with the stage name.

    A linear solve or fit that finds no result (``LinAlgError``) and a floating-point fault are the
    algorithm's failure on this input (:class:`AlgorithmError`); any other ``ValueError`` says the data do
    not fit the stage (:class:`InputError`).
    """
    start = time.perf_counter()
    try:
        yield
    except BlinkError as err:
        if err.stage == "unknown":
            err.stage = name
        raise
    except (FloatingPointError, np.linalg.LinAlgError) as err:  # LinAlgError is a ValueError: caught first
        raise AlgorithmError(f"{name} found no result on this input: {err}", stage=name) from err
    except ValueError as err:
        raise InputError(f"{name} failed on this input: {err}", stage=name) from err
    finally:
        timings[name] = time.perf_counter() - start


def calibrate_ccd(inputs: CcdInputs, *, config: PipelineConfig = PipelineConfig(),
                  timings: dict[str, float] | None = None) -> tuple[CalibratedExposure, Table]:
    """The processCcd half of the pipeline: ISR, then calibration (background, sources, PSF, astrometry,
    photometry). What :func:`process_ccd` runs first, and what a template coadd runs on each input CCD.

    Parameters
    ----------
    inputs : CcdInputs
        Raw CCD, calibrations and reference catalog (Gaia-archive columns, turned into the exposure's
        reference stars by :func:`pipeline.refcat.reference_stars`; template tiles and APDB data are not used).
    config : PipelineConfig
    timings : dict, optional
        Receives the seconds of the ``isr`` and ``calibrate`` stages.

    Returns
    -------
    exposure : CalibratedExposure
    sources : astropy.table.Table
        The calibration's source catalog (``x``, ``y``, ``snr``, ``is_psf_star``, ...).
    """
    timings = {} if timings is None else timings
    return calibrate_isr_image(isr_ccd(inputs, config=config, timings=timings), inputs, config=config,
                               timings=timings)


def isr_ccd(inputs: CcdInputs, *, config: PipelineConfig = PipelineConfig(),
            timings: dict[str, float] | None = None) -> MaskedImage:
    """The ISR step of a raw CCD (stage ``isr``): the trimmed image and variance in electrons, with mask bits."""
    with _stage("isr", {} if timings is None else timings):
        return run_isr(inputs.raw, inputs.bias, inputs.flat, inputs.defects, config=config.isr,
                       crosstalk=(inputs.ccd.crosstalk_a_from_b, inputs.ccd.crosstalk_b_from_a))


def calibrate_isr_image(isr_image: MaskedImage, inputs: CcdInputs, *, config: PipelineConfig = PipelineConfig(),
                        timings: dict[str, float] | None = None) -> tuple[CalibratedExposure, Table]:
    """The calibration step of a raw CCD after ISR (stage ``calibrate``), started from the raw header's WCS
    and the camera model; ``inputs`` gives the raw's header and exposure facts, the CCD and the reference
    catalog."""
    raw = inputs.raw
    with _stage("calibrate", {} if timings is None else timings):
        camera = field_angle_model(inputs.ccd) if config.use_camera_model else None
        refstars = reference_stars(inputs.refcat, mjd_tai=raw.info.mjd_mid_tai, band=raw.info.band,
                                   config=config.refcat)
        return calibrate(isr_image, header_wcs(raw.header), refstars, info=raw.info, ccdnum=raw.ccdnum,
                         config=config.calibrate, camera=camera)


def calibrate_instcal(instcal: InstCalCcd, refcat: Table, *, config: PipelineConfig = PipelineConfig(),
                      timings: dict[str, float] | None = None) -> tuple[CalibratedExposure, Table]:
    """:func:`calibrate_ccd` for a Community Pipeline InstCal CCD: no ISR (the CP removed the instrument's
    signature), the same calibration.

    The CP image becomes ISR's output (:func:`pipeline.decam.instcal.instcal_electrons`: electrons, variance
    from the weight map, DQ codes and SATURATE as mask bits). The astrometric fit starts from the CP's TPV WCS,
    which already holds the optical distortion: with ``config.use_camera_model`` the TPV plays the camera
    model's part (the stars fit only a low-order map on top of it; DECam's nominal model is not applied
    again), else a TAN-SIP is fitted to the stars from it.

    Parameters
    ----------
    instcal : InstCalCcd
    refcat : Table
        Reference catalog overlapping the CCD, as for :func:`calibrate_ccd` (Gaia-archive columns, turned into
        the exposure's reference stars by :func:`pipeline.refcat.reference_stars`).
    config : PipelineConfig
    timings : dict, optional
        Receives the seconds of the ``instcal`` (conversion) and ``calibrate`` stages; there is no ``isr``.

    Returns
    -------
    exposure : CalibratedExposure
        Its metadata also holds ``cp_zero_point`` (MAGZERO as an AB magnitude of 1 electron; NaN if absent).
    sources : astropy.table.Table
    """
    timings = {} if timings is None else timings
    with _stage("instcal", timings):
        electrons = instcal_electrons(instcal, config=config.isr)
    with _stage("calibrate", timings):
        camera = tpv_field_angles(instcal.wcs) if config.use_camera_model else None
        refstars = reference_stars(refcat, mjd_tai=instcal.info.mjd_mid_tai, band=instcal.info.band,
                                   config=config.refcat)
        exposure, sources = calibrate(electrons, instcal.wcs, refstars, info=instcal.info, ccdnum=instcal.ccdnum,
                                      config=config.calibrate, camera=camera)
    exposure.metadata["cp_zero_point"] = instcal.cp_zero_point
    return exposure, sources


STEPS = ("isr", "calibrate", "diffim", "detect", "associate")
"""The steps of a CCD's run, in order (as ApPipeTask's runProcessCcd, runDiffIm and runAssociation): ISR;
calibration; template warp and subtraction; detection and reliability; association and forced photometry."""


@dataclass(frozen=True)
class Difference:
    """What the ``diffim`` step made: the subtraction, and the FWHM of the template it subtracted."""

    subtraction: SubtractionResult
    template_fwhm_arcsec: float


@dataclass(frozen=True)
class Association:
    """What the ``associate`` step made: the associated DiaSources, the DiaObjects they touched (new
    versions), the forced photometry rows, and how many DiaObjects are new."""

    dia_sources: Table
    dia_objects: Table
    dia_forced_sources: Table
    n_new_dia_objects: int


@dataclass
class CcdRun:
    """One CCD's run through :data:`STEPS`: each step reads what earlier ones left here and adds its own.

    :func:`process_ccd` runs every step on fresh inputs; an offline run (:mod:`streamer.products`) may fill a
    field from a product written before instead of running its step. An InstCal CCD has no ISR image (the CP's
    image is converted and calibrated by the ``calibrate`` step).
    """

    inputs: CcdInputs | InstCalInputs
    config: PipelineConfig = PipelineConfig()
    timings: dict[str, float] = field(default_factory=dict)
    isr_image: MaskedImage | None = None
    exposure: CalibratedExposure | None = None
    sources: Table | None = None
    difference: Difference | None = None
    detections: Table | None = None
    association: Association | None = None

    def run_all(self, *, keep_isr_image: bool = False) -> CcdOutputs:
        """Run every step of :data:`STEPS` and return the outputs; the ISR image is let go once calibrated
        unless ``keep_isr_image`` (every later product stays here for the caller)."""
        for step in STEPS:
            self.run(step)
            if step == "calibrate" and not keep_isr_image:
                self.isr_image = None
        return self.outputs()

    def run(self, step: str) -> None:
        """Run one step of :data:`STEPS` on what the earlier steps left (stage timings in ``timings``)."""
        getattr(self, f"_{step}")()

    def _isr(self) -> None:
        if isinstance(self.inputs, CcdInputs):
            self.isr_image = isr_ccd(self.inputs, config=self.config, timings=self.timings)

    def _calibrate(self) -> None:
        if isinstance(self.inputs, InstCalInputs):
            self.exposure, self.sources = calibrate_instcal(self.inputs.instcal, self.inputs.refcat,
                                                            config=self.config, timings=self.timings)
        else:
            self.exposure, self.sources = calibrate_isr_image(_needed(self.isr_image, "isr"), self.inputs,
                                                              config=self.config, timings=self.timings)

    def _diffim(self) -> None:
        exposure, sources = _needed(self.exposure, "calibrate"), _needed(self.sources, "calibrate")
        with _stage("template", self.timings):
            template = warp_template(self.inputs.template_tiles, exposure.wcs, exposure.masked.image.shape,
                                     config=self.config.template)
        stars = sources[np.asarray(sources["is_psf_star"])]
        stars = stars[np.argsort(-np.asarray(stars["snr"]))]
        with _stage("subtract", self.timings):
            result = subtract(exposure, template, np.asarray(stars["x"]), np.asarray(stars["y"]),
                              config=self.config.subtract)
        self.difference = Difference(result, template.psf_fwhm_arcsec)

    def _detect(self) -> None:
        subtraction = _needed(self.difference, "diffim").subtraction
        config = self.config
        exposure = _needed(self.exposure, "calibrate")
        with _stage("detect", self.timings):
            dia_sources = detect_dia_sources(subtraction, exposure, config=config.detect)
        with _stage("reliability", self.timings):
            reliability, version = _reliability(dia_sources, subtraction, exposure, self.inputs.reliability_model,
                                                config.reliability)
            dia_sources["reliability"] = reliability
            dia_sources["reliabilityVersion"] = np.full(len(dia_sources), version, dtype="U8")
        self.detections = dia_sources

    def _associate(self) -> None:
        exposure, subtraction = _needed(self.exposure, "calibrate"), _needed(self.difference, "diffim").subtraction
        with _stage("associate", self.timings):
            region_objects = self.inputs.dia_objects
            dia_sources, is_new = associate(_needed(self.detections, "detect"), region_objects,
                                            config=self.config.association)
            touched = np.unique(np.asarray(dia_sources["diaObjectId"], np.int64))
            history = history_with(dia_sources, self.inputs.dia_sources)
            updated_objects = summarize_objects(touched, history, exposure.info.mjd_mid_tai)
        with _stage("forced", self.timings):
            untouched = region_objects[~np.isin(np.asarray(region_objects["diaObjectId"], np.int64), touched)] \
                if len(region_objects) else region_objects
            shared_cols = ["diaObjectId", "ra", "dec", "nDiaSources"]
            candidates = vstack([untouched[shared_cols], updated_objects[shared_cols]]) if len(untouched) \
                else updated_objects[shared_cols]
            forced = forced_photometry(candidates, subtraction, exposure, config=self.config.forced)
        self.association = Association(dia_sources, updated_objects, forced, int(is_new.sum()))

    def outputs(self) -> CcdOutputs:
        """The CCD's outputs from its finished steps: cutouts (``config.do_cutouts``) and per-stage figures."""
        exposure, difference = _needed(self.exposure, "calibrate"), _needed(self.difference, "diffim")
        found, result = _needed(self.association, "associate"), difference.subtraction
        cutouts: dict[int, tuple[bytes, bytes, bytes]] = {}
        if self.config.do_cutouts:
            with _stage("cutouts", self.timings):
                cutouts = make_cutouts(found.dia_sources, result, exposure,
                                       flux_quantization=self.config.cutout_flux_quantization)
        metadata: dict[str, object] = dict(exposure.metadata)
        metadata.update({"timings_s": self.timings, "zero_point": exposure.zero_point,
                         "psf_fwhm_arcsec": exposure.psf_fwhm_pix * pixel_scale_arcsec(exposure.wcs),
                         "template_fwhm_arcsec": difference.template_fwhm_arcsec, "kernel_stamps": result.n_stamps,
                         "kernel_fallback": result.kernel_fallback, "variance_scale": result.variance_scale,
                         "convolved_science": result.convolved_science, "n_dia_sources": len(found.dia_sources),
                         "n_new_dia_objects": found.n_new_dia_objects, "n_forced": len(found.dia_forced_sources)})
        log.info("CCD %d of visit %d: %d DiaSources, %d new DiaObjects, %d forced (%.1f s)", exposure.ccdnum,
                 exposure.info.expnum, len(found.dia_sources), found.n_new_dia_objects,
                 len(found.dia_forced_sources), sum(self.timings.values()))
        return CcdOutputs(exposure=exposure, difference=result.difference, dia_sources=found.dia_sources,
                          dia_objects=found.dia_objects, dia_forced_sources=found.dia_forced_sources,
                          cutouts=cutouts, metadata=metadata)


def _reliability(dia_sources: Table, subtraction: SubtractionResult, exposure: CalibratedExposure,
                 model: ReliabilityModel | None, config: ReliabilityConfig) -> tuple[np.ndarray, str]:
    """The reliability of each DiaSource and the model's version (NaN and empty when ``do_score`` is off)."""
    if not config.do_score:
        return np.full(len(dia_sources), np.nan, np.float32), ""
    if model is None:
        raise InputError("the inputs carry no reliability model (the shell reads the shipped one: "
                         "streamer.reliability_model), and reliability.do_score is on", stage="reliability")
    return score(dia_sources, exposure.masked, subtraction.matched_template, subtraction.difference,
                 model=model), model.version


def _needed(value: _T | None, step: str) -> _T:
    """An earlier step's product, which this step needs (an InputError if that step has not run)."""
    if value is None:
        raise InputError(f"the {step} step's product is needed first", stage=step)
    return value


def process_ccd(inputs: CcdInputs | InstCalInputs, *, config: PipelineConfig = PipelineConfig()) -> CcdOutputs:
    """Run the full per-CCD pipeline: every step of :data:`STEPS` in turn (:meth:`CcdRun.run_all`).

    Parameters
    ----------
    inputs : CcdInputs or InstCalInputs
        Raw CCD and calibrations (ISR, then calibration) or a CP InstCal CCD (calibration only), with the
        reference catalog, template tiles and APDB region data.
    config : PipelineConfig

    Returns
    -------
    CcdOutputs

    Raises
    ------
    InputError, NoWorkError, AlgorithmError
        With ``stage`` naming where it failed.
    """
    return CcdRun(inputs, config).run_all()
