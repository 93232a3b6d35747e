"""The shipped reliability model: read from the package data, versioned, small, and what the pipeline scores with."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.reliability import DEFAULT_MIN_RELIABILITY, FEATURES, MODEL_VERSION, PLANES
from streamer.reliability_model import read_model, shipped_model, write_model


def test_shipped_model_loads_and_is_small():
    model = shipped_model()
    assert model.version == MODEL_VERSION and 1 <= len(model.version) <= 8
    side = 2 * model.stamp_half_size + 1
    assert model.net.input_shape == (len(PLANES), side, side)
    assert set(model.feature_names) <= set(FEATURES) and model.net.n_side == len(model.feature_names)
    # "a few thousand to tens of thousands" of float32: cheap to run on a CPU
    assert 1_000 <= model.net.n_parameters <= 50_000
    assert model.min_reliability == pytest.approx(DEFAULT_MIN_RELIABILITY), \
        "the settings' default threshold is the one chosen for the shipped model"
    assert shipped_model() is model, "read once per process"


def test_model_file_round_trip(tmp_path):
    model = shipped_model()
    path = tmp_path / "copy.npz"
    write_model(model, path)
    again = read_model(path.read_bytes())
    rng = np.random.default_rng(0)
    side = 2 * model.stamp_half_size + 1
    stamps = rng.normal(0, 1, (4, 3, side, side)).astype(np.float32)
    features = rng.normal(0, 1, (4, len(model.feature_names))).astype(np.float32)
    np.testing.assert_array_equal(model.net.logits(stamps, features), again.net.logits(stamps, features))
    assert (again.version, again.min_reliability) == (model.version, model.min_reliability)


def test_bad_model_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="reliability model"):
        read_model(b"not an npz file")
    arrays = shipped_model().to_arrays()
    del arrays["dense0_w"]
    path = tmp_path / "broken.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match="dense"):
        read_model(path.read_bytes())
    with pytest.raises(InputError, match="no reliability model"):
        shipped_model("nope-9")
