"""Configuration of the DECam simulator."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .camera import SCIENCE_CCDS


class SimConfig(BaseModel):
    """What ``simulate`` makes. Same config (seed included) -> identical files.

    Frozen, and a misspelled or out-of-range option is a ``ValidationError`` naming it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    seed: int = Field(42, ge=0)
    n_fields: int = Field(1, ge=1, le=1000)
    n_epochs: int = Field(3, ge=1, le=1000)
    ccds: list[int] = Field(default_factory=lambda: [1, 28, 35])
    """CCDNUMs simulated in every exposure (1 = S29 is at the focal-plane edge, 28 = S4 and 35 = N4 central)."""
    bands: list[str] = Field(default_factory=lambda: ["r"])
    """Bands, cycled over the epochs of a field; templates and flats are made for each."""
    small: bool = False
    """Fewer stars and galaxies; also writes the cosmic-ray truth masks."""
    compress: bool = False
    """Write raws fpack-compressed (``.fits.fz``, RICE_1, one-row tiles); InstCal products too (RICE_1: image and
    weight quantised at 1/4 of their noise as the CP's, mask lossless)."""
    instcal: bool = False
    """Write Community Pipeline InstCal products (ooi, oow, ood: :mod:`simulator.instcal`) instead of raws; the
    exposure-ready events name the ooi files (product ``instcal``)."""
    star_density: float | None = Field(None, ge=0, le=1e6)
    """Stars per square degree (default 25000, small 5000), r from 15 to 25 mag."""
    galaxy_density: float | None = Field(None, ge=0, le=1e6)
    """Galaxies per square degree (default 8000, small 2000), r from 18 to 24.5 mag."""
    galaxy_model: Literal["real", "simple"] = "simple"
    """``real``: number counts of the real sky's slopes (0.45 then 0.32 per mag), disk sizes shrinking with
    magnitude, and bulges (de Vaucouleurs, a quarter of them early types) beside the exponential disks
    (:mod:`simulator.sources`); ``simple``: exponential disks of log-uniform sizes 0.4-2", counts of slope 0.3.
    Off by default until the pipeline copes with it (bench/bench_artifacts.py measures it alone)."""
    n_transients: int = Field(8, ge=0, le=10_000)
    """Per CCD and field: about 3/8 new point sources, 3/8 supernovae on galaxies, 1/4 variable stars."""
    snr_range: tuple[float, float] = (5.0, 100.0)
    """Peak SNR of the transients (log-uniform); every epoch where a transient shows has SNR in this range."""
    seeing_range: tuple[float, float] = (0.8, 2.0)
    airmass_range: tuple[float, float] = (1.0, 2.0)
    psf_variation: bool = True
    """PSFs of the real DECam PSFEx models (:mod:`simulator.psf`: elliptical, their Moffat wings, changing across
    each CCD and from CCD to CCD); False: one circular Moffat of ``beta = 3.5`` per exposure."""
    calibration_noise: bool = True
    """The master bias and flat written to ``calib/`` carry the noise of the frames they were combined from (20
    biases, 10 flats of 20,000 e-), as a real one does; False: they are the truth the raws were made with."""
    flat_illumination_error: float = Field(0.01, ge=0, le=0.2)
    """Largest departure of the written master flat from the true one in illumination: a smooth pattern across
    each CCD (a dome flat's illumination is not the sky's), per CCD and band; 0: none."""
    n_unlisted_hot_pixels: int = Field(20, ge=0, le=100_000)
    """Hot pixels per CCD that are in no defect list (the same pixels in every exposure), with 200 to 20,000
    e- of dark charge per exposure."""
    cosmic_rays: int = Field(150, ge=0, le=100_000)
    """Cosmic rays per CCD and exposure."""
    crosstalk: bool = True
    """Crosstalk between each CCD's two amplifiers from the real DECam coefficients (:mod:`simulator.crosstalk`)."""
    gain_error: float = Field(0.003, ge=0, le=0.1)
    """Standard deviation of each amplifier's true gain about the tabulated one, as a fraction
    (:func:`simulator.calibrations.true_gains`); 0: the tabulated gains."""
    nonlinearity: float = Field(0.01, ge=0, le=0.2)
    """Shortfall of the amplifiers' output at saturation, as a fraction (:mod:`simulator.detector`; in
    proportion to the signal below it); 0: linear."""
    brighter_fatter: float = Field(0.0, ge=0, le=0.5)
    """Growth of a star's FWHM at full well, as a fraction, in proportion to its peak charge
    (:mod:`simulator.detector`); 0: every star has the faint-star PSF.
    Off by default until the pipeline copes with it (bench/bench_artifacts.py measures it alone)."""
    dcr: bool = False
    """Differential chromatic refraction: stars displaced towards the zenith by their colour, in proportion to
    tan(z) (:mod:`simulator.dcr`; about 0.1" per magnitude of g - r at airmass 1.4 in g).
    Off by default until the pipeline copes with it (bench/bench_artifacts.py measures it alone)."""
    bright_star_optics: bool = True
    """Diffraction spikes, a scattered-light halo and a pupil ghost around stars brighter than about r = 16
    (:mod:`simulator.bright_stars`)."""
    sky_gradient: float = Field(0.0, ge=0, le=1.0)
    """Change of the sky level from the field's centre to its edge (a plane over the focal plane in a direction
    drawn per exposure: :mod:`simulator.sky`), as a fraction; 0: a flat sky.
    Off by default until the pipeline copes with it (bench/bench_artifacts.py measures it alone)."""
    fringe_scale: float = Field(1.0, ge=0, le=20.0)
    """Fringes in z and Y at this multiple of their DECam amplitude (0.2% of the sky RMS in z, 0.6% in Y); 0:
    none."""
    satellite_trails: float = Field(0.05, ge=0, le=100)
    """Mean number of satellite trails per CCD and exposure (:mod:`simulator.trails`; a trail crosses several
    CCDs of an exposure, so a few percent of CCD-visits is one in five exposures or so); 0: none."""
    aircraft_trails: float = Field(0.0, ge=0, le=100)
    """Mean number of aircraft trails (two wing lights and a strobe) per CCD and exposure; 0: none."""
    asteroid_density: float = Field(0.0, ge=0, le=10_000)
    """Asteroids per square degree (r 19 to 23.5; :mod:`simulator.asteroids`): moving, trailed, in one epoch
    only; about 100 near the ecliptic, a few at high ecliptic latitude. Their truth: ``truth/fluxes.ecsv``,
    kind ``asteroid``."""
    start_mjd: float = Field(61000.2, ge=50000.0, le=80000.0)
    """MJD of the first exposure (1995 to 2077)."""
    exptime: float = Field(90.0, gt=0, le=3600.0)
    template_depth: float = Field(26.0, ge=15.0, le=35.0)
    """5-sigma point-source AB depth of the template tiles."""
    template_fwhm: float = Field(0.9, gt=0, le=10.0)
    """PSF FWHM (arcsec) of the template tiles."""
    templates: Literal["truth", "epochs", "both"] = "truth"
    """``truth``: template tiles rendered from the truth catalog (a fixture for unit tests); ``epochs``: earlier
    exposures of the fields (raws without events, :mod:`simulator.epochs`) that ``blink templates build``
    coadds, as a survey builds its templates; ``both``: the earlier epochs and the truth tiles (the same sky
    and night as ``epochs`` with the same seed: for comparing built templates with truth-rendered ones)."""
    n_template_epochs: int = Field(6, ge=1, le=100)
    """Earlier epochs per field and band when ``templates="epochs"``."""
    template_seeing_range: tuple[float, float] = (0.7, 1.2)
    """Seeing (arcsec) of the earlier epochs."""
    pointing_error_arcsec: float = Field(2.0, ge=0, le=600.0)
    """Maximum telescope pointing error: the header WCS is off from the truth by up to this."""
    dither_arcsec: float = Field(30.0, ge=0, le=3600.0)
    """Maximum pointing offset between epochs of a field."""
    tile_spacing_deg: float = Field(0.25, gt=0, le=5.0)
    tile_overlap_deg: float = Field(0.01, ge=0, le=1.0)
    first_expnum: int = Field(1100000, ge=1, lt=10**9)
    field_centers: list[tuple[float, float]] | None = None
    """Optional (ra, dec) of the fields (degrees); random high-latitude ones otherwise."""
    progress: bool = False
    """Show a rich progress bar."""

    @field_validator("ccds")
    @classmethod
    def _check_ccds(cls, v: list[int]) -> list[int]:
        bad = [c for c in v if c not in SCIENCE_CCDS]
        if bad:
            raise ValueError(f"not science CCDs: {bad}")
        if len(set(v)) != len(v) or not v:
            raise ValueError("ccds must be a non-empty list of distinct CCDNUMs")
        return list(v)

    @field_validator("snr_range", "seeing_range", "airmass_range", "template_seeing_range")
    @classmethod
    def _check_range(cls, v: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        airmass = info.field_name == "airmass_range"
        if not ((1.0 <= v[0] if airmass else 0.0 < v[0]) and v[0] <= v[1]):
            raise ValueError(f"needs {'1 <=' if airmass else '0 <'} low <= high, got {v}")
        return v

    @field_validator("field_centers")
    @classmethod
    def _check_centers(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is not None and not all(0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0 for ra, dec in v):
            raise ValueError(f"field centres must be (ra in [0, 360), dec in [-90, 90]) degrees, got {v}")
        return v

    @field_validator("bands")
    @classmethod
    def _check_bands(cls, v: list[str]) -> list[str]:
        bad = [b for b in v if b not in ("g", "r", "i", "z", "Y")]
        if bad or not v:
            raise ValueError(f"bands must be among g r i z Y, got {v}")
        return list(v)

    @property
    def stars_per_deg2(self) -> float:
        return self.star_density if self.star_density is not None else (5000.0 if self.small else 25000.0)

    @property
    def galaxies_per_deg2(self) -> float:
        if self.galaxy_density is not None:
            return self.galaxy_density
        return 2000.0 if self.small else 8000.0
