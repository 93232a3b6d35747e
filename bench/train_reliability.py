"""Train the DiaSource reliability CNN on simulated nights, evaluate it on held-out ones, save its weights.

    pip install -e '.[train]'          # PyTorch (training only; inference is numpy, in pipeline/)
    python bench/train_reliability.py [--version cnn-1] [--epochs 40] [--collect-only]

The data recipe (:data:`TRAIN_NIGHTS`, :data:`HELD_OUT_NIGHTS`): full-density nights of the simulator in g, r, i
and z, seeing 0.7-2.2", central CCDs and the edge CCD 1, with seeds that no test and no other bench uses (the
training seeds 1601-1699, the held-out ones 1701-1799). Each night is simulated once into
``bench/out/reliability/<night>/``, every CCD-visit is run through the pipeline up to detection (no APDB
history), and each DiaSource's stamps (``pipeline.reliability.candidate_stamps``, the very function the
pipeline scores with, at :data:`CACHE_HALF_SIZE`) and measured features are cached in
``bench/out/reliability/<night>.npz`` with the night's truth; the raws and templates are then deleted. Labels
come from the referee, ``simulator.scoring.label_dia_sources``: real = a found transient (right sign,
consistent flux), a variable star's residual or an asteroid; bogus = everything else.

Training: PyTorch on the CPU, the network of :func:`build_torch_net` (class-balanced cross-entropy, Adam, the
stamps flipped and rotated by multiples of 90 degrees at random). The weights are exported to the numpy network
(``pipeline.cnn``) and checked to give the same scores as PyTorch on the held-out stamps.

Evaluation on the held-out nights (never trained on): ROC AUC (with a bootstrap over CCD-visits), and against the
threshold: completeness of the injected transients of true SNR >= 6 above the cut, purity of the DiaSources of
SNR >= 6 above it, false DiaSources per CCD-visit above it (Wilson and Poisson 95% intervals); the figures go to
``bench/reliability_<version>_*.png``. The threshold (:func:`choose_threshold`) keeps completeness >= 90% and
purity >= 95% at SNR >= 6 with the widest margin, at <= 2 false DiaSources per CCD (issue 16's goals), and is
recorded in the weight file as ``min_reliability``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from astropy.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, OUT_DIR, console  # noqa: E402

REPO = BENCH_DIR.parent
CACHE = OUT_DIR / "reliability"
CACHE_HALF_SIZE = 15
"""Half size of the cached stamps (31 x 31): a model may crop them further."""

_COMMON = dict(n_epochs=3, n_transients=40)
TRAIN_NIGHTS = {
    "train-g": dict(seed=1601, bands=["g"], ccds=[1, 35], seeing_range=(0.9, 1.5), airmass_range=(1.0, 1.5)),
    "train-r": dict(seed=1602, bands=["r"], ccds=[28, 1], seeing_range=(0.7, 1.0), airmass_range=(1.0, 1.3)),
    "train-i": dict(seed=1603, bands=["i"], ccds=[35, 28], seeing_range=(1.0, 1.7), airmass_range=(1.1, 1.7)),
    "train-z": dict(seed=1604, bands=["z"], ccds=[1, 28], seeing_range=(1.5, 2.2), airmass_range=(1.5, 2.0)),
    "train-g2": dict(seed=1605, bands=["g"], ccds=[28, 62], seeing_range=(1.3, 2.1), airmass_range=(1.2, 1.8)),
    "train-r2": dict(seed=1606, bands=["r"], ccds=[35, 31], seeing_range=(1.5, 2.2), airmass_range=(1.3, 2.0)),
    "train-i2": dict(seed=1607, bands=["i"], ccds=[1, 62], seeing_range=(0.7, 1.0), airmass_range=(1.0, 1.2)),
    "train-z2": dict(seed=1608, bands=["z"], ccds=[31, 35], seeing_range=(0.9, 1.5), airmass_range=(1.0, 1.5)),
}
"""Training nights: 4 bands x 2 nights x 2 CCDs (edge 1, 31 and corner 62 among them) x 3 epochs = 48 CCD-visits,
40 transients per CCD."""
HELD_OUT_NIGHTS = {
    "held-g": dict(seed=1701, bands=["g"], ccds=[28, 1], seeing_range=(0.8, 1.3), airmass_range=(1.0, 1.4),
                   n_epochs=2, n_transients=20),
    "held-r": dict(seed=1702, bands=["r"], ccds=[35, 1], seeing_range=(1.0, 1.6), airmass_range=(1.0, 1.5),
                   n_epochs=2, n_transients=20),
    "held-i": dict(seed=1703, bands=["i"], ccds=[1, 28], seeing_range=(0.7, 1.1), airmass_range=(1.0, 1.3),
                   n_epochs=2, n_transients=20),
    "held-z": dict(seed=1704, bands=["z"], ccds=[35, 28], seeing_range=(1.6, 2.2), airmass_range=(1.5, 2.0),
                   n_epochs=2, n_transients=20),
}
"""Held-out nights: other seeds and conditions, 16 CCD-visits, 20 transients per CCD (as the unit tests)."""
EVAL_SNR = 6.0
"""The SNR above which issue 16's purity and completeness goal holds (Rubin OSS-REQ-0353)."""
_DIA_COLUMNS = ("diaSourceId", "visit", "detector", "ra", "dec", "x", "y", "psfFlux", "psfFluxErr", "snr")


class _EmptyApdb:
    def read_region(self, region, visit_mjd_tai):
        from streamer.worker.processor import empty_region

        return empty_region()


def _candidates(root: Path) -> tuple[Table, np.ndarray]:
    """Every DiaSource of a simulated repository (APDB empty) and its stamps, ``(n, 3, s, s)`` float16."""
    from astropy.table import vstack

    from pipeline.ccd import CcdRun, PipelineConfig
    from pipeline.reliability import FEATURES, ReliabilityConfig, candidate_stamps, features
    from pipeline.threads import using
    from streamer.events.files import read_event_file
    from streamer.worker.inputs import DataRepository
    from streamer.worker.processor import CcdProcessor

    config = PipelineConfig(reliability=ReliabilityConfig(do_score=False))
    proc = CcdProcessor(DataRepository(root), _EmptyApdb(), alert_sink=None)  # type: ignore[arg-type]
    ccds = sorted(set(np.asarray(Table.read(root / "truth" / "fluxes.ecsv")["ccdnum"]).tolist()) - {-1})
    tables, stamps = [], []
    for path in sorted((root / "events").glob("*.avro")):
        event = read_event_file(path)
        for ccd in ccds:
            run = CcdRun(proc.gather(event, ccd)[0], config)
            with using(2):
                for step in ("isr", "calibrate", "diffim", "detect"):
                    run.run(step)
            dia, sub = run.detections, run.difference.subtraction
            cut = candidate_stamps(run.exposure.masked, sub.matched_template, sub.difference,
                                   np.asarray(dia["x"], float), np.asarray(dia["y"], float),
                                   half_size=CACHE_HALF_SIZE, asinh_softening=1.0)
            table = Table({c: dia[c] for c in _DIA_COLUMNS if c in dia.colnames})
            for name, column in zip(FEATURES, features(dia).T):
                table[f"f_{name}"] = column
            tables.append(table)
            stamps.append(cut.astype(np.float16))
    return vstack(tables), np.concatenate(stamps)


def collect(name: str, sim: dict) -> Path:
    """The cached candidates of a night (simulated, processed and cached once)."""
    from simulator import SimConfig
    from streamer.simulated import simulated_repository

    out = CACHE / f"{name}.npz"
    if out.exists():
        return out
    root = CACHE / name
    start = time.perf_counter()
    if not (root / "truth" / "fluxes.ecsv").exists():
        shutil.rmtree(root, ignore_errors=True)
        simulated_repository(root, SimConfig(**{**_COMMON, **sim}))
    simulated = time.perf_counter()
    table, stamps = _candidates(root)
    truth = {f"truth_{k}": Table.read(root / "truth" / f"{k}.ecsv") for k in ("sources", "fluxes")}
    arrays = {f"dia_{c}": np.asarray(table[c]) for c in table.colnames}
    for key, t in truth.items():
        arrays.update({f"{key}__{c}": np.asarray(t[c]) for c in t.colnames})
    np.savez_compressed(out, stamps=stamps, **arrays)
    shutil.rmtree(root)
    console.print(f"{name}: {len(table)} DiaSources, simulated in {simulated - start:.0f} s, processed in "
                  f"{time.perf_counter() - simulated:.0f} s")
    return out


def _load(path: Path) -> tuple[Table, np.ndarray, Table, Table]:
    """(DiaSources with features, stamps, truth sources, truth fluxes) of a cached night."""
    with np.load(path, allow_pickle=False) as z:
        parts = {"dia": {}, "truth_sources": {}, "truth_fluxes": {}}
        for key in z.files:
            if key.startswith("dia_"):
                parts["dia"][key[4:]] = z[key]
            elif key.startswith("truth_"):
                table, column = key.split("__", 1)
                parts[table][column] = z[key]
        stamps = z["stamps"].astype(np.float32)
    return Table(parts["dia"]), stamps, Table(parts["truth_sources"]), Table(parts["truth_fluxes"])


class Dataset:
    """Candidates of several nights: stamps cropped to the model's size, raw features, labels, CCD-visit ids."""

    def __init__(self, paths: list[Path], half_size: int, softening: float):
        from astropy.table import vstack

        from pipeline.reliability import FEATURES
        from simulator.scoring import label_dia_sources

        dias, stamps, self.truth = [], [], []
        crop = slice(CACHE_HALF_SIZE - half_size, CACHE_HALF_SIZE + half_size + 1)
        for night, path in enumerate(paths):
            dia, st, sources, fluxes = _load(path)
            dia["is_real"] = label_dia_sources(dia, sources, fluxes)
            dia["night"] = night  # nights share exposure numbers
            dias.append(dia)
            # the cache holds arcsinh(z); the model's softening s: arcsinh(sinh(a) / s)
            stamps.append(np.arcsinh(np.sinh(st[:, :, crop, crop]) / softening).astype(np.float32))
            self.truth.append((dia, sources, fluxes))
        self.dia = vstack(dias)
        self.stamps = np.concatenate(stamps)
        self.features = np.column_stack([np.asarray(self.dia[f"f_{n}"], np.float32) for n in FEATURES])
        self.y = np.asarray(self.dia["is_real"], bool)
        self.unit = (np.asarray(self.dia["night"], np.int64) * 10**10 + np.asarray(self.dia["visit"], np.int64) * 100
                     + np.asarray(self.dia["detector"], np.int64))

    @property
    def n_ccd_visits(self) -> int:
        return int(np.unique(self.unit).size)


def build_torch_net(n_side: int):
    """The network trained: conv 5x5 (8 maps) -> ReLU -> max-pool 2 -> conv 3x3 (16) -> ReLU -> max-pool 2 ->
    dense 32 (the flattened maps and the side features) -> ReLU -> 1 (mirrors :class:`pipeline.cnn.ConvNet`)."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList([nn.Conv2d(3, 8, 5), nn.Conv2d(8, 16, 3)])
            self.pools = (2, 2)
            self.fc1 = nn.LazyLinear(32)
            self.fc2 = nn.Linear(32, 1)
            self.n_side = n_side

        def forward(self, x, side):
            for conv, pool in zip(self.convs, self.pools):
                x = torch.relu(conv(x))
                if pool > 1:
                    x = nn.functional.max_pool2d(x, pool)
            x = torch.cat([x.flatten(1), side], dim=1)
            return self.fc2(torch.relu(self.fc1(x)))[:, 0]

    return Net()


def _dihedral(x, k: int, flip: bool):
    import torch

    x = torch.rot90(x, k, dims=(2, 3))
    return torch.flip(x, dims=(3,)) if flip else x


def train(data: Dataset, *, epochs: int, seed: int = 16, lr: float = 3e-3, batch: int = 128):
    """Train the network on ``data``; (torch net, feature mean, feature std)."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    mean, std = data.features.mean(axis=0), data.features.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    x = torch.from_numpy(data.stamps)
    side = torch.from_numpy(((data.features - mean) / std).astype(np.float32))
    y = torch.from_numpy(data.y.astype(np.float32))
    n_real, n_bogus = int(data.y.sum()), int((~data.y).sum())
    weight = torch.from_numpy(np.where(data.y, 0.5 / n_real, 0.5 / n_bogus).astype(np.float32) * len(data.y))
    net = build_torch_net(side.shape[1])
    net(x[:2], side[:2])  # materialise the lazy layer
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    for epoch in range(epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(len(y)))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            xb = _dihedral(x[idx], int(rng.integers(4)), bool(rng.integers(2)))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xb, side[idx]), y[idx],
                                                                        weight=weight[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if epoch % 5 == 4 or epoch == epochs - 1:
            console.print(f"  epoch {epoch + 1:3d}: loss {total / len(y):.4f}")
    net.eval()
    return net, mean.astype(np.float32), std


def export(net, mean: np.ndarray, std: np.ndarray, *, version: str, half_size: int, softening: float,
           min_reliability: float):
    """The numpy :class:`~pipeline.reliability.ReliabilityModel` of a trained torch network."""
    from pipeline.reliability import FEATURES, ReliabilityModel

    arrays: dict[str, np.ndarray] = {}
    for i, (conv, pool) in enumerate(zip(net.convs, net.pools)):
        arrays[f"conv{i}_w"] = conv.weight.detach().numpy().astype(np.float32)
        arrays[f"conv{i}_b"] = conv.bias.detach().numpy().astype(np.float32)
        arrays[f"conv{i}_pool"] = np.int64(pool)
    for i, fc in enumerate((net.fc1, net.fc2)):
        arrays[f"dense{i}_w"] = fc.weight.detach().numpy().T.astype(np.float32).copy()
        arrays[f"dense{i}_b"] = fc.bias.detach().numpy().astype(np.float32)
    arrays.update(version=np.asarray(version), stamp_half_size=np.int64(half_size),
                  asinh_softening=np.float64(softening), feature_names=np.asarray(FEATURES),
                  feature_mean=mean, feature_std=std, min_reliability=np.float64(min_reliability))
    return ReliabilityModel.from_arrays(arrays)


def numpy_scores(model, data: Dataset) -> np.ndarray:
    """The pipeline's scores (numpy network) of a dataset's candidates."""
    side = ((data.features - model.feature_mean) / model.feature_std).astype(np.float32)
    logit = np.clip(model.net.logits(data.stamps, side), -50.0, 50.0)
    return 1.0 / (1.0 + np.exp(-logit))


def roc_auc(scores: np.ndarray, is_real: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic over the product of the class sizes."""
    from scipy.stats import mannwhitneyu

    pos, neg = scores[is_real], scores[~is_real]
    return float(mannwhitneyu(pos, neg).statistic / (pos.size * neg.size))


def bootstrap_auc(scores: np.ndarray, data: Dataset, n: int = 200, seed: int = 1) -> tuple[float, float]:
    """(2.5%, 97.5%) of the AUC over CCD-visits resampled with replacement."""
    rng = np.random.default_rng(seed)
    units = np.unique(data.unit)
    rows = [np.flatnonzero(data.unit == u) for u in units]
    values = []
    for _ in range(n):
        pick = np.concatenate([rows[i] for i in rng.integers(0, units.size, units.size)])
        if data.y[pick].any() and (~data.y[pick]).any():
            values.append(roc_auc(scores[pick], data.y[pick]))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def curves(scores: np.ndarray, data: Dataset, thresholds: np.ndarray) -> Table:
    """Against the threshold: found and injected transients of true SNR >= 6 above the cut, real and all
    DiaSources of SNR >= 6 above it, and false DiaSources above it (all SNRs), summed over the held-out nights."""
    from simulator.scoring import score_dia_sources

    rows = []
    snr = np.abs(np.asarray(data.dia["psfFlux"], float) / np.asarray(data.dia["psfFluxErr"], float))
    bright = snr >= EVAL_SNR
    for t in thresholds:
        keep = scores >= t
        found = injected = n_false = 0
        offset = 0
        for dia, sources, fluxes in data.truth:
            k = keep[offset:offset + len(dia)]
            offset += len(dia)
            per_exposure, _ = score_dia_sources(dia[k], sources, fluxes, detectable_snr=EVAL_SNR)
            found += int(per_exposure["n_found"].sum())
            injected += int(per_exposure["n_injected"].sum())
            n_false += int(per_exposure["n_false"].sum())
        rows.append((float(t), found, injected, int((keep & bright & data.y).sum()), int((keep & bright).sum()),
                     n_false))
    return Table(rows=rows, names=["threshold", "found", "injected", "real_kept", "kept", "n_false"])


def choose_threshold(table: Table, n_ccd_visits: int, *, min_completeness: float = 0.90, min_purity: float = 0.95,
                     max_false: float = 2.0) -> float:
    """The threshold that keeps completeness and purity at SNR >= 6 furthest above their goals: the one that
    maximises the smaller of the two margins, then the larger, among those with at most ``max_false`` false
    DiaSources per CCD-visit (the lowest of equals)."""
    threshold = np.asarray(table["threshold"], float)
    completeness = np.asarray(table["found"]) / np.maximum(np.asarray(table["injected"]), 1) - min_completeness
    purity = np.asarray(table["real_kept"]) / np.maximum(np.asarray(table["kept"]), 1) - min_purity
    allowed = np.asarray(table["n_false"]) / n_ccd_visits <= max_false
    smaller = np.where(allowed, np.minimum(completeness, purity), -np.inf)
    larger = np.where(allowed, np.maximum(completeness, purity), -np.inf)
    return float(threshold[np.lexsort((-threshold, larger, smaller))[-1]])


def report(table: Table, n_ccd_visits: int, chosen: float) -> None:
    """Print the curves at a few thresholds with their 95% intervals."""
    from astropy.stats import binom_conf_interval, poisson_conf_interval
    from rich.table import Table as RichTable

    def binomial(k: int, n: int) -> tuple[float, float, float]:
        return (k / n, *binom_conf_interval(k, n, confidence_level=0.95, interval="wilson")) if n else (np.nan,) * 3

    def rate(k: int) -> tuple[float, float, float]:  # Garwood 95%: poisson_conf_interval's default is 1 sigma
        lo, hi = poisson_conf_interval(k, interval="frequentist-confidence", sigma=1.959964) / n_ccd_visits
        return k / n_ccd_visits, lo, hi

    out = RichTable(title=f"held-out curves ({n_ccd_visits} CCD-visits), 95% intervals")
    for name in ("threshold", f"completeness, true SNR >= {EVAL_SNR:g}", f"purity, SNR >= {EVAL_SNR:g}",
                 "false per CCD-visit"):
        out.add_column(name, justify="right")
    for row in table:
        t = row["threshold"]
        if not (np.isclose(t * 10, round(t * 10)) or np.isclose(t, chosen)):
            continue
        c = binomial(int(row["found"]), int(row["injected"]))
        p = binomial(int(row["real_kept"]), int(row["kept"]))
        f = rate(int(row["n_false"]))
        out.add_row(f"{t:.2f}" + (" (chosen)" if np.isclose(t, chosen) else ""),
                    f"{c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}] ({row['found']}/{row['injected']})",
                    f"{p[0]:.3f} [{p[1]:.3f}, {p[2]:.3f}] ({row['real_kept']}/{row['kept']})",
                    f"{f[0]:.2f} [{f[1]:.2f}, {f[2]:.2f}]")
    console.print(out)


def plots(scores: np.ndarray, data: Dataset, table: Table, chosen: float, prefix: Path) -> list[Path]:
    """ROC, and purity / completeness / false per CCD against the threshold, as PNG files."""
    from streamer.inspect import pyplot, save_png

    plt = pyplot()
    order = np.argsort(-scores)
    tpr = np.cumsum(data.y[order]) / max(data.y.sum(), 1)
    fpr = np.cumsum(~data.y[order]) / max((~data.y).sum(), 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(fpr, tpr, lw=1.5)
    axes[0].plot([0, 1], [0, 1], ":", color="grey")
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate",
                title=f"held-out ROC, AUC {roc_auc(scores, data.y):.3f}")
    t = np.asarray(table["threshold"])
    axes[1].plot(t, np.asarray(table["found"]) / np.maximum(np.asarray(table["injected"]), 1),
                 label=f"completeness (true SNR >= {EVAL_SNR:g})")
    axes[1].plot(t, np.asarray(table["real_kept"]) / np.maximum(np.asarray(table["kept"]), 1),
                 label=f"purity (SNR >= {EVAL_SNR:g})")
    ax2 = axes[1].twinx()
    ax2.plot(t, np.asarray(table["n_false"]) / data.n_ccd_visits, color="C3", label="false per CCD-visit")
    ax2.set_ylabel("false DiaSources per CCD-visit", color="C3")
    ax2.set_yscale("symlog", linthresh=1.0)
    ax2.legend(loc="upper right", fontsize=8)
    axes[1].axvline(chosen, color="k", ls="--", lw=0.8)
    axes[1].axhline(0.9, color="grey", ls=":", lw=0.8)
    axes[1].axhline(0.95, color="grey", ls=":", lw=0.8)
    axes[1].set(xlabel="reliability threshold", ylim=(0, 1.02), title=f"held-out, threshold {chosen:.2f}")
    axes[1].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path = prefix.with_name(prefix.name + "_curves.png")
    save_png(fig, path)
    plt.close(fig)
    return [path]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", default=None, help="model version (default pipeline.reliability.MODEL_VERSION)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--half-size", type=int, default=10, help="stamp half size of the model (<= 15)")
    ap.add_argument("--softening", type=float, default=3.0, help="arcsinh softening of the stamps, in sigma")
    ap.add_argument("--collect-only", action="store_true", help="simulate, process and cache the nights only")
    ap.add_argument("--out", type=Path, help="weight file (default pipeline/data/reliability/<version>.npz)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from pipeline.reliability import MODEL_VERSION
    from streamer.reliability_model import write_model

    version = args.version or MODEL_VERSION
    CACHE.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train_paths = [collect(name, sim) for name, sim in TRAIN_NIGHTS.items()]
    held_paths = [collect(name, sim) for name, sim in HELD_OUT_NIGHTS.items()]
    console.print(f"nights collected in {time.perf_counter() - start:.0f} s")
    if args.collect_only:
        return 0
    train_set = Dataset(train_paths, args.half_size, args.softening)
    held = Dataset(held_paths, args.half_size, args.softening)
    for name, d in (("training", train_set), ("held-out", held)):
        console.print(f"{name}: {len(d.y)} DiaSources on {d.n_ccd_visits} CCD-visits, {int(d.y.sum())} real, "
                      f"{int((~d.y).sum())} bogus")
    start = time.perf_counter()
    net, mean, std = train(train_set, epochs=args.epochs)
    console.print(f"trained in {time.perf_counter() - start:.0f} s")
    import torch

    with torch.no_grad():
        side = torch.from_numpy(((held.features - mean) / std).astype(np.float32))
        torch_scores = torch.sigmoid(net(torch.from_numpy(held.stamps), side)).numpy()
    model = export(net, mean, std, version=version, half_size=args.half_size, softening=args.softening,
                   min_reliability=0.5)
    scores = numpy_scores(model, held)
    agree = float(np.max(np.abs(scores - torch_scores)))
    console.print(f"numpy network: {model.net.n_parameters} parameters; |numpy - torch| <= {agree:.2e} on the "
                  "held-out stamps")
    if agree > 1e-4:
        raise SystemExit("the numpy network disagrees with PyTorch")
    train_scores = numpy_scores(model, train_set)
    lo, hi = bootstrap_auc(scores, held)
    console.print(f"AUC: training {roc_auc(train_scores, train_set.y):.4f}, held-out {roc_auc(scores, held.y):.4f} "
                  f"[{lo:.4f}, {hi:.4f}] (bootstrap over CCD-visits, 95%)")
    table = curves(scores, held, np.round(np.arange(0.0, 1.0, 0.01), 2))
    chosen = choose_threshold(table, held.n_ccd_visits)
    report(table, held.n_ccd_visits, chosen)
    model = export(net, mean, std, version=version, half_size=args.half_size, softening=args.softening,
                   min_reliability=chosen)
    out = args.out or REPO / "pipeline" / "data" / "reliability" / f"{version}.npz"
    write_model(model, out)
    figures = plots(scores, held, table, chosen, BENCH_DIR / f"reliability_{version}")
    console.print(f"chosen threshold {chosen:.2f}; weights -> {out} ({out.stat().st_size / 1e3:.0f} kB); figures "
                  + ", ".join(str(p) for p in figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
