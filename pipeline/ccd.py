"""The per-CCD pipeline, composed in order: ISR -> calibrate -> template -> subtract -> detect ->
reliability -> associate -> forced photometry -> cutouts. Pure: inputs in, outputs out."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from astropy.table import vstack
from pydantic import BaseModel, ConfigDict, Field

from pipeline.associate import AssociationConfig, associate, history_with, summarize_objects
from pipeline.calibrate import CalibrateConfig, calibrate
from pipeline.cutouts import make_cutouts
from pipeline.decam.camera import field_angle_model
from pipeline.decam.header import header_wcs
from pipeline.detect import DetectConfig, detect_dia_sources
from pipeline.errors import BlinkError, InputError
from pipeline.forced import ForcedConfig, forced_photometry
from pipeline.isr import IsrConfig, run_isr
from pipeline.psf import FWHM_PER_SIGMA, GaussianPsf
from pipeline.reliability import ReliabilityConfig, score
from pipeline.subtract import SubtractConfig, subtract
from pipeline.template import TemplateConfig, warp_template
from pipeline.types import CcdInputs, CcdOutputs

log = logging.getLogger(__name__)


class PipelineConfig(BaseModel):
    """Configuration of every stage of the per-CCD pipeline (frozen; a misspelled option is an error)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    isr: IsrConfig = IsrConfig()
    calibrate: CalibrateConfig = CalibrateConfig()
    template: TemplateConfig = TemplateConfig()
    subtract: SubtractConfig = SubtractConfig()
    detect: DetectConfig = DetectConfig()
    reliability: ReliabilityConfig = ReliabilityConfig()
    association: AssociationConfig = AssociationConfig()
    forced: ForcedConfig = ForcedConfig()
    do_cutouts: bool = Field(True, description="Make science/template/difference cutouts for alerts.")
    use_camera_model: bool = Field(True, description="Start the astrometric fit from DECam's nominal optical "
                                                     "distortion (fit only an affine map on top of it).")


@contextmanager
def _stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Time a stage and tag any Blink error with the stage name."""
    start = time.perf_counter()
    try:
        yield
    except BlinkError as err:
        if err.stage == "unknown":
            err.stage = name
        raise
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as err:
        raise InputError(f"{name} failed on this input: {err}", stage=name) from err
    finally:
        timings[name] = time.perf_counter() - start


def process_ccd(inputs: CcdInputs, config: PipelineConfig = PipelineConfig()) -> CcdOutputs:
    """Run the full per-CCD pipeline.

    Parameters
    ----------
    inputs : CcdInputs
        Raw CCD, calibrations, reference catalog, template tiles and APDB region data.
    config : PipelineConfig

    Returns
    -------
    CcdOutputs

    Raises
    ------
    InputError, NoWorkError, AlgorithmError
        With ``stage`` naming where it failed.
    """
    timings: dict[str, float] = {}
    raw = inputs.raw
    info, detector = raw.info, raw.ccdnum
    with _stage("isr", timings):
        isr_image = run_isr(raw, inputs.bias, inputs.flat, inputs.defects, config.isr,
                            crosstalk=(inputs.ccd.crosstalk_a_from_b, inputs.ccd.crosstalk_b_from_a))
    with _stage("calibrate", timings):
        camera = field_angle_model(inputs.ccd) if config.use_camera_model else None
        exposure, sources = calibrate(isr_image, header_wcs(raw.header), inputs.refcat, info, detector,
                                      config.calibrate, camera=camera)
    shape = exposure.masked.image.shape
    scale_arcsec = float(np.sqrt(abs(np.linalg.det(exposure.wcs.pixel_scale_matrix))) * 3600.0)
    with _stage("template", timings):
        template, template_fwhm_arcsec = warp_template(inputs.template_tiles, exposure.wcs, shape,
                                                       config.template)
    science_psf: GaussianPsf = exposure.psf_model
    ny, nx = shape
    science_sigma = float(science_psf.sigma_at((nx - 1) / 2, (ny - 1) / 2))
    template_sigma = template_fwhm_arcsec / scale_arcsec / FWHM_PER_SIGMA
    stars = sources[np.asarray(sources["is_psf_star"])]
    stars = stars[np.argsort(-np.asarray(stars["snr"]))]
    with _stage("subtract", timings):
        result = subtract(exposure.masked, template, np.asarray(stars["x"]), np.asarray(stars["y"]),
                          science_sigma, template_sigma, config.subtract, science_psf=science_psf)
    diff_psf = result.difference_psf if result.difference_psf is not None \
        else GaussianPsf((result.psf_sigma_pix, 0.0, 0.0))
    with _stage("detect", timings):
        dia_sources = detect_dia_sources(result.difference, exposure.masked, result.matched_template,
                                         exposure.wcs, diff_psf, science_psf, info, detector, config.detect)
        dia_sources["reliability"] = score(dia_sources, config.reliability).astype(np.float32)
        dia_sources["reliabilityVersion"] = np.full(len(dia_sources), config.reliability.version)
    with _stage("associate", timings):
        region_objects = inputs.dia_objects
        dia_sources, is_new = associate(dia_sources, region_objects, config.association)
        touched = np.unique(np.asarray(dia_sources["diaObjectId"], np.int64))
        history = history_with(dia_sources, inputs.dia_sources)
        updated_objects = summarize_objects(touched, history, info.mjd_mid_tai)
    with _stage("forced", timings):
        untouched = region_objects[~np.isin(np.asarray(region_objects["diaObjectId"], np.int64), touched)] \
            if len(region_objects) else region_objects
        shared_cols = ["diaObjectId", "ra", "dec", "nDiaSources"]
        candidates = vstack([untouched[shared_cols], updated_objects[shared_cols]]) if len(untouched) \
            else updated_objects[shared_cols]
        forced = forced_photometry(candidates, result.difference, exposure.masked, exposure.wcs, diff_psf,
                                   science_psf, info, detector, config.forced)
    cutouts: dict[int, tuple[bytes, bytes, bytes]] = {}
    if config.do_cutouts:
        with _stage("cutouts", timings):
            x, y = np.asarray(dia_sources["x"], float), np.asarray(dia_sources["y"], float)
            psf_half = int(np.clip(np.ceil(3 * result.psf_sigma_pix), 5, 15))
            psf_stamps = diff_psf.stamps(np.rint(x), np.rint(y), psf_half) if len(x) else None
            made = make_cutouts(exposure.masked, result.matched_template, result.difference, exposure.wcs,
                                x, y, np.asarray(dia_sources["bboxSize"]), psf_stamps)
            cutouts = dict(zip(np.asarray(dia_sources["diaSourceId"]).tolist(), made))
    metadata = dict(exposure.metadata)
    metadata.update({"timings_s": timings, "zero_point": exposure.zero_point,
                     "psf_fwhm_arcsec": exposure.psf_fwhm_pix * scale_arcsec,
                     "template_fwhm_arcsec": template_fwhm_arcsec, "kernel_stamps": result.n_stamps,
                     "kernel_fallback": result.kernel_fallback, "variance_scale": result.variance_scale,
                     "convolved_science": result.convolved_science, "n_dia_sources": len(dia_sources),
                     "n_new_dia_objects": int(is_new.sum()), "n_forced": len(forced)})
    log.info("CCD %d of visit %d: %d DiaSources, %d new DiaObjects, %d forced (%.1f s)", detector,
             info.expnum, len(dia_sources), int(is_new.sum()), len(forced), sum(timings.values()))
    return CcdOutputs(exposure=exposure, difference=result.difference, dia_sources=dia_sources,
                      dia_objects=updated_objects, dia_forced_sources=forced, cutouts=cutouts,
                      metadata=metadata)
