"""The reliability model's numpy CNN and its stamps: the forward pass against a reference written another way
(scipy's correlation, strided max-pooling), batch independence and determinism, shape checks of the weights,
and the stamps' normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from scipy.signal import correlate

from pipeline.cnn import BATCH, ConvNet
from pipeline.masks import MaskBit
from pipeline.reliability import FEATURES, ReliabilityModel, candidate_stamps, score
from pipeline.types import MaskedImage


def _arrays(seed: int = 0, *, c_in: int = 3, side: int = 11, n_side: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"conv0_w": rng.normal(0, 0.3, (4, c_in, 3, 3)), "conv0_b": rng.normal(0, 0.1, 4),
              "conv0_pool": np.int64(2),
              "conv1_w": rng.normal(0, 0.3, (5, 4, 3, 3)), "conv1_b": rng.normal(0, 0.1, 5),
              "conv1_pool": np.int64(1)}
    h = (side - 2) // 2 - 2
    arrays.update(dense0_w=rng.normal(0, 0.3, (5 * h * h + n_side, 6)), dense0_b=rng.normal(0, 0.1, 6),
                  dense1_w=rng.normal(0, 0.3, (6, 1)), dense1_b=rng.normal(0, 0.1, 1))
    return {k: np.asarray(v, np.float32) if v.dtype.kind == "f" else v for k, v in arrays.items()}


def _reference_logits(arrays: dict[str, np.ndarray], images: np.ndarray, side: np.ndarray) -> np.ndarray:
    """The forward pass with scipy's correlation per channel pair and strided slices for the pooling."""
    out = []
    for image, extra in zip(images.astype(np.float64), side.astype(np.float64)):
        x = image
        i = 0
        while f"conv{i}_w" in arrays:
            w, b, pool = arrays[f"conv{i}_w"], arrays[f"conv{i}_b"], int(arrays[f"conv{i}_pool"])
            x = np.stack([sum(correlate(x[c], w[o, c], mode="valid") for c in range(w.shape[1])) + b[o]
                          for o in range(w.shape[0])])
            x = np.maximum(x, 0.0)
            if pool > 1:
                h, wd = x.shape[1] // pool * pool, x.shape[2] // pool * pool
                x = np.max([x[:, dy:h:pool, dx:wd:pool] for dy in range(pool) for dx in range(pool)], axis=0)
            i += 1
        v = np.concatenate([x.ravel(), extra])
        v = np.maximum(v @ arrays["dense0_w"] + arrays["dense0_b"], 0.0)
        out.append((v @ arrays["dense1_w"] + arrays["dense1_b"])[0])
    return np.array(out)


def test_forward_matches_reference():
    arrays = _arrays()
    net = ConvNet.from_arrays(arrays, (3, 11, 11))
    rng = np.random.default_rng(1)
    images = rng.normal(0, 1, (7, 3, 11, 11)).astype(np.float32)
    side = rng.normal(0, 1, (7, 2)).astype(np.float32)
    got = net.logits(images, side)
    assert got.shape == (7,) and got.dtype == np.float32
    # float32 against float64 sums of a few hundred terms of order 1: agreement to a few 1e-6
    np.testing.assert_allclose(got, _reference_logits(arrays, images, side), rtol=1e-4, atol=1e-4)
    assert net.n_parameters == sum(v.size for k, v in arrays.items() if not k.endswith("pool"))


def test_forward_is_deterministic_and_batch_independent():
    net = ConvNet.from_arrays(_arrays(), (3, 11, 11))
    rng = np.random.default_rng(2)
    images = rng.normal(0, 1, (BATCH + 9, 3, 11, 11)).astype(np.float32)
    side = rng.normal(0, 1, (BATCH + 9, 2)).astype(np.float32)
    whole = net.logits(images, side)
    np.testing.assert_array_equal(whole, net.logits(images, side))
    one_by_one = np.concatenate([net.logits(images[i:i + 1], side[i:i + 1]) for i in (0, BATCH - 1, BATCH, BATCH + 8)])
    np.testing.assert_allclose(one_by_one, whole[[0, BATCH - 1, BATCH, BATCH + 8]], rtol=1e-5, atol=1e-5)
    assert net.logits(images[:0], side[:0]).shape == (0,)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(conv1_w=a["conv1_w"][:, :3]), "conv1"),
    (lambda a: a.update(dense0_w=a["dense0_w"][:-3]), "dense0"),
    (lambda a: a.pop("dense1_w"), "one output"),
    (lambda a: a["conv0_b"].__setitem__(0, np.nan), "finite"),
])
def test_bad_weights_are_refused(change, message):
    arrays = {k: np.array(v) for k, v in _arrays().items()}
    change(arrays)
    with pytest.raises(ValueError, match=message):
        ConvNet.from_arrays(arrays, (3, 11, 11))


def _model_arrays(version: str = "test-1") -> dict[str, np.ndarray]:
    arrays = _arrays(side=11, n_side=len(FEATURES))
    arrays.update(version=np.asarray(version), stamp_half_size=np.int64(5), asinh_softening=np.float64(3.0),
                  feature_names=np.asarray(FEATURES), feature_mean=np.zeros(len(FEATURES), np.float32),
                  feature_std=np.ones(len(FEATURES), np.float32), min_reliability=np.float64(0.5))
    return arrays


def test_model_arrays_round_trip_and_checks():
    model = ReliabilityModel.from_arrays(_model_arrays())
    again = ReliabilityModel.from_arrays(model.to_arrays())
    assert (again.version, again.stamp_half_size, again.feature_names) == ("test-1", 5, FEATURES)
    for k, v in model.net.to_arrays().items():
        np.testing.assert_array_equal(v, again.net.to_arrays()[k])
    with pytest.raises(ValueError, match="1 to 8 characters"):
        ReliabilityModel.from_arrays(_model_arrays("much-too-long"))
    bad = _model_arrays()
    bad["feature_names"] = np.asarray(("log_abs_snr", "colour") + FEATURES[2:])
    with pytest.raises(ValueError, match="unknown features"):
        ReliabilityModel.from_arrays(bad)
    bad = _model_arrays()
    del bad["min_reliability"]
    with pytest.raises(ValueError, match="lack"):
        ReliabilityModel.from_arrays(bad)


def _planes(ny: int = 60, nx: int = 50):
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:ny, :nx]
    star = 5000.0 * np.exp(-((xx - 20) ** 2 + (yy - 30) ** 2) / (2 * 1.5**2))
    planes = []
    for sigma, signal in ((10.0, star), (2.0, 0.0 * star), (10.0, star)):
        image = (signal + rng.normal(0, sigma, (ny, nx))).astype(np.float32)
        planes.append(MaskedImage(image, np.zeros((ny, nx), np.int32), np.full((ny, nx), sigma**2, np.float32)))
    return planes


def test_stamps_are_noise_normalised_and_blank_off_image():
    science, template, difference = _planes()
    mask = difference.mask.copy()
    mask[28, 18] = int(MaskBit.NO_DATA)
    difference = MaskedImage(difference.image, mask, difference.variance)
    stamps = candidate_stamps(science, template, difference, np.array([20.2, 2.0]), np.array([29.8, 57.0]),
                              half_size=4, asinh_softening=3.0)
    assert stamps.shape == (2, 3, 9, 9) and stamps.dtype == np.float32
    # the centre of the first: the star's peak over the noise (10), arcsinh-compressed with softening 3
    expected = np.arcsinh(science.image[30, 20] / 10.0 / 3.0)
    assert stamps[0, 0, 4, 4] == pytest.approx(expected, rel=1e-6)
    # the template plane is noise only: its pixels over its noise (2) have unit spread (81 pixels: within 25%)
    assert 0.75 < np.std(np.sinh(stamps[0, 1]) * 3.0) < 1.25
    assert stamps[0, 2, 2, 2] == 0.0, "a NO_DATA pixel is 0"
    # the second sits at the image's corner: pixels off the image are 0
    assert np.all(stamps[1, :, 7:, :] == 0.0) and np.all(stamps[1, :, :, :2] == 0.0)
    assert candidate_stamps(science, template, difference, np.zeros(0), np.zeros(0), half_size=4,
                            asinh_softening=3.0).shape == (0, 3, 9, 9)


def test_score_is_a_probability_per_source():
    model = ReliabilityModel.from_arrays(_model_arrays())
    science, template, difference = _planes()
    table = Table({"x": [20.0, 40.0], "y": [30.0, 10.0], "psfFlux": [5e4, 30.0], "psfFluxErr": [40.0, 40.0]})
    p = score(table, science, template, difference, model=model)
    assert p.shape == (2,) and p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))
    np.testing.assert_array_equal(p, score(table, science, template, difference, model=model))
    assert score(table[:0], science, template, difference, model=model).shape == (0,)
