"""Blink's subtraction against published codes (SFFT, properimage's ZOGY) on the same simulated pairs.

For each simulated CCD-exposure (full density, templates built by Blink from earlier epochs, cached under
``bench/out/``), runs Blink's ISR, calibration and template warp once, crops the same ``--crop`` x ``--crop``
box of the science image and the warped template, then subtracts with each method in a forked child process
(so that peak memory is the child's own):

- ``blink``: ``pipeline.subtract.subtract`` (Alard-Lupton on stars + DMTN-021 decorrelation);
- ``sfft``: ``sfft.CustomizedPacket.Customized_Packet.CP`` (Hu et al. 2022), numpy backend, 2 threads, kernel
  and background polynomial order 2, whole images as the fitting masks;
- ``zogy``: ``properimage.operations.subtract`` (Zackay, Ofek and Gal-Yam 2016), Gaussian-fitted PSFs.

Every difference image gets the same detection: sep background, then ``sep.extract`` at 5 sigma of the
global rms (minarea 5) on the image and its negative. Detections within 1 arcsec of an injected variable
source are matches; others are false. Prints one table: completeness at |SNR| >= 10 and 5.5-10, false
detections, wall time and peak RSS of the child.

Run: ``python bench/bench_subtraction.py`` (``--crop 1024``, ``--methods blink,sfft,zogy``, ``--root DIR``).
SFFT and properimage are optional (``pip install sfft properimage``; properimage needs ``tinynpydb``, whose
build needs ``pip install wheel`` then ``pip install --no-build-isolation tinynpydb``, plus astroalign,
joblib and matplotlib).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT_DIR, console, machine_line  # noqa: E402
from rich.table import Table as RichTable  # noqa: E402


class _EmptyApdb:
    def read_region(self, region, visit_mjd_tai):
        from streamer.worker.processor import empty_region

        return empty_region()


def prepare(root: Path, crop: int):
    """Yield (label, science, template, stars, sigmas, wcs, x0, y0, truth rows) per CCD-exposure."""
    from astropy.table import Table, join

    from pipeline.ccd import PipelineConfig, calibrate_ccd
    from pipeline.subtract import matching_sigmas
    from pipeline.template import warp_template
    from streamer.events.files import read_event_file
    from streamer.worker.inputs import DataRepository
    from streamer.worker.processor import CcdProcessor

    config = PipelineConfig()
    proc = CcdProcessor(DataRepository(root), _EmptyApdb(), alert_sink=None)  # type: ignore[arg-type]
    fluxes = join(Table.read(root / "truth" / "fluxes.ecsv", format="ascii.ecsv"),
                  Table.read(root / "truth" / "sources.ecsv", format="ascii.ecsv")["source_id", "ra", "dec"],
                  keys="source_id")
    for path in sorted((root / "events").glob("*.avro")):
        event = read_event_file(path)
        for ccd in sorted(set(np.asarray(fluxes["ccdnum"]).tolist())):
            inputs, _ = proc.gather(event, ccd)
            raw = inputs.raw
            exposure, sources = calibrate_ccd(inputs, config=config)
            ny, nx = exposure.masked.image.shape
            template = warp_template(inputs.template_tiles, exposure.wcs, (ny, nx), config=config.template)
            s_sigma, t_sigma = matching_sigmas(exposure, template)
            x0, y0 = (nx - min(crop, nx)) // 2, (ny - min(crop, ny)) // 2
            box = (slice(y0, y0 + min(crop, ny)), slice(x0, x0 + min(crop, nx)))
            stars = sources[np.asarray(sources["is_psf_star"])]
            sx, sy = np.asarray(stars["x"], float) - x0, np.asarray(stars["y"], float) - y0
            ok = (sx > 0) & (sx < box[1].stop - x0) & (sy > 0) & (sy < box[0].stop - y0)
            truth = fluxes[(np.asarray(fluxes["expnum"]) == raw.info.expnum) & (np.asarray(fluxes["ccdnum"]) == ccd)]
            yield (f"{raw.info.expnum}/{ccd}", exposure.masked, template.masked, box, sx[ok], sy[ok], s_sigma, t_sigma,
                   exposure.wcs, x0, y0, truth)


def _crop(masked, box):
    from pipeline.types import MaskedImage

    return MaskedImage(image=np.ascontiguousarray(masked.image[box]), mask=np.ascontiguousarray(masked.mask[box]),
                       variance=np.ascontiguousarray(masked.variance[box]))


def run_blink(sci, tmpl, sx, sy, s_sigma, t_sigma):
    from pipeline.subtract import subtract_images

    return subtract_images(sci, tmpl, sx, sy, science_sigma_pix=s_sigma, template_sigma_pix=t_sigma).difference.image


def run_sfft(sci, tmpl, sx, sy, s_sigma, t_sigma):
    from astropy.io import fits
    from sfft.CustomizedPacket import Customized_Packet

    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: str(Path(tmp) / f"{k}.fits") for k in ("ref", "sci", "mref", "msci", "diff")}
        ref = np.nan_to_num(tmpl.image).astype(np.float64)
        new = np.nan_to_num(sci.image).astype(np.float64)
        for key, data in (("ref", ref), ("sci", new), ("mref", ref), ("msci", new)):
            fits.writeto(paths[key], data, overwrite=True)
        force = "REF" if t_sigma < s_sigma else "SCI"
        half_width = int(np.clip(np.ceil(2.5 * 2.355 * max(s_sigma, t_sigma)), 5, 15))
        Customized_Packet.CP(FITS_REF=paths["ref"], FITS_SCI=paths["sci"], FITS_mREF=paths["mref"],
                             FITS_mSCI=paths["msci"], ForceConv=force, GKerHW=half_width,
                             FITS_DIFF=paths["diff"], KerPolyOrder=2, BGPolyOrder=2, ConstPhotRatio=True,
                             BACKEND_4SUBTRACT="Numpy", NUM_CPU_THREADS_4SUBTRACT=2, VERBOSE_LEVEL=0)
        diff = fits.getdata(paths["diff"]).astype(np.float32)
    # SFFT's difference is science - matched reference when the reference is convolved, and
    # matched science - reference otherwise: new sources are positive either way.
    return diff


def run_zogy(sci, tmpl, sx, sy, s_sigma, t_sigma):
    import properimage.operations as ops
    from properimage.single_image import SingleImage

    with SingleImage(np.nan_to_num(tmpl.image).astype(np.float64), smooth_psf=False) as ref, \
            SingleImage(np.nan_to_num(sci.image).astype(np.float64), smooth_psf=False) as new:
        d, _, _, _ = ops.subtract(ref=ref, new=new, align=False, iterative=False, beta=False, shift=False)
    return np.real(d).astype(np.float32)


METHODS = {"blink": run_blink, "sfft": run_sfft, "zogy": run_zogy}


def _child(method, args, queue):
    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    try:
        diff = METHODS[method](*args)
        error = ""
    except Exception as err:  # a third-party code failing is a result to report, not a crash
        diff, error = None, f"{type(err).__name__}: {err}"[:120]
    queue.put((diff, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, error))


def run_method(method, args):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(method, args, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def detect(diff: np.ndarray, margin: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Same detection for every method: sep at 5 sigma of the global rms, both signs, edges dropped."""
    import sep

    data = np.ascontiguousarray(np.nan_to_num(diff), dtype=np.float32)
    bkg = sep.Background(data)
    sub = data - bkg.back()
    xs, ys = [], []
    for sign in (1.0, -1.0):
        obj = sep.extract(np.ascontiguousarray(sign * sub), 5.0, err=bkg.globalrms, minarea=5)
        xs.append(obj["x"])
        ys.append(obj["y"])
    x, y = np.concatenate(xs), np.concatenate(ys)
    ny, nx = data.shape
    keep = (x > margin) & (x < nx - margin) & (y > margin) & (y < ny - margin)
    return x[keep], y[keep]


def score(x, y, wcs, x0, y0, box, truth):
    """(hit flags of truth rows inside the box, number of false detections)."""
    from scipy.spatial import cKDTree

    from pipeline.astrometry import pixel_scale_arcsec

    tx, ty = wcs.all_world2pix(np.asarray(truth["ra"], float), np.asarray(truth["dec"], float), 0)
    tx, ty = tx - x0, ty - y0
    h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
    inside = (tx > 20) & (tx < w - 20) & (ty > 20) & (ty < h - 20)
    scale = pixel_scale_arcsec(wcs)
    hit = np.zeros(len(truth), bool)
    n_false = len(x)
    if len(x) and inside.any():
        d, i = cKDTree(np.column_stack([x, y])).query(np.column_stack([tx[inside], ty[inside]]),
                                                      distance_upper_bound=1.0 / scale)
        found = np.isfinite(d)
        hit[np.flatnonzero(inside)[found]] = True
        n_false = len(x) - np.unique(i[found]).size
    return inside, hit, n_false


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, help="simulated repository (default: simulate into bench/out/)")
    ap.add_argument("--crop", type=int, default=1024, help="square box subtracted by every method (pixels)")
    ap.add_argument("--methods", default="blink,sfft,zogy")
    ap.add_argument("--max-pairs", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    from simulator import SimConfig
    from streamer.simulated import simulated_repository

    root = args.root
    if root is None:
        root = OUT_DIR / "sim_subtraction_seed31_built_templates"
        if not (root / "truth" / "fluxes.ecsv").exists():
            console.print(f"simulating into {root} (once)...")
            simulated_repository(root, SimConfig(seed=31, n_epochs=2, ccds=[28], small=False, n_transients=40,
                                                 templates="epochs"))
    methods = [m for m in args.methods.split(",") if m]
    totals = {m: {"n10": 0, "h10": 0, "n5": 0, "h5": 0, "false": 0, "time": [], "rss": [], "err": ""}
              for m in methods}
    n_pairs = 0
    for label, sci_full, tmpl_full, box, sx, sy, s_sigma, t_sigma, wcs, x0, y0, truth in prepare(root, args.crop):
        if n_pairs >= args.max_pairs:
            break
        n_pairs += 1
        sci, tmpl = _crop(sci_full, box), _crop(tmpl_full, box)
        snr = np.abs(np.asarray(truth["snr"], float))
        for m in methods:
            diff, wall, rss, err = run_method(m, (sci, tmpl, sx, sy, s_sigma, t_sigma))
            t = totals[m]
            t["time"].append(wall)
            t["rss"].append(rss)
            if diff is None:
                t["err"] = err
                continue
            x, y = detect(diff)
            inside, hit, n_false = score(x, y, wcs, x0, y0, box, truth)
            t["n10"] += int((inside & (snr >= 10)).sum())
            t["h10"] += int((hit & (snr >= 10)).sum())
            t["n5"] += int((inside & (snr >= 5.5) & (snr < 10)).sum())
            t["h5"] += int((hit & (snr >= 5.5) & (snr < 10)).sum())
            t["false"] += n_false
            console.print(f"  {label} {m}: {wall:.1f} s, {int(hit.sum())} found, {n_false} false")
    table = RichTable(title=f"Subtraction codes on {n_pairs} simulated {args.crop}x{args.crop} pairs, same sep "
                            f"detection at 5 sigma | {machine_line()}")
    for col in ("method", "complete |SNR|>=10", "complete 5.5-10", "false / pair", "time / pair s",
                "peak RSS GB", "note"):
        table.add_column(col, justify="left" if col in ("method", "note") else "right")
    for m in methods:
        t = totals[m]
        table.add_row(m, f"{t['h10']}/{t['n10']}", f"{t['h5']}/{t['n5']}",
                      f"{t['false'] / max(n_pairs, 1):.1f}", f"{np.median(t['time']):.1f}" if t["time"] else "",
                      f"{max(t['rss']) / 1e9:.2f}" if t["rss"] else "", t["err"])
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
