"""Cubic B-spline from shifted slices against scipy's map_coordinates, on the orientations a DECam CCD takes
on a sky tile (transposed, flipped, 0.2% scale, a small rotation) and at the array's edges."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.spline_eval import cubic_at, orientation


def _mapping(shape, jac, offset):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    ty = offset[0] + jac[0][0] * rows + jac[0][1] * cols
    tx = offset[1] + jac[1][0] * rows + jac[1][1] * cols
    return ty.astype(np.float32), tx.astype(np.float32)


@pytest.mark.parametrize("jac, offset", [
    ([[1.0023, 3e-4], [-3e-4, 1.0023]], (-15.2, 100.6)),          # aligned
    ([[3e-4, -1.0023], [-1.0023, -3e-4]], (650.4, 700.2)),        # CCD 28 on its tile: transposed, both flipped
    ([[-0.998, 1e-3], [2e-3, 0.9985]], (470.7, 12.25)),           # one flip
])
def test_slices_equal_map_coordinates(jac, offset):
    rng = np.random.default_rng(5)
    coeffs = ndimage.spline_filter(rng.normal(0.0, 100.0, size=(460, 720)), 3, mode="nearest",
                                   output=np.float32)
    ty, tx = _mapping((400, 640), jac, offset)
    orient = orientation(coeffs, jac)
    assert orient is not None
    wanted = (ty >= 0) & (ty <= coeffs.shape[0] - 1) & (tx >= 0) & (tx <= coeffs.shape[1] - 1)
    assert 0.3 < wanted.mean() < 1.0  # some blocks cross the array's edge and go to map_coordinates
    got = cubic_at(coeffs, orient, ty, tx, wanted)
    want = ndimage.map_coordinates(coeffs, [ty, tx], order=3, mode="nearest", prefilter=False, output=np.float32)
    # float32 sums of 25 products (scipy sums in float64): values reach about 300, where a unit in the last
    # place is 3e-5; ten allowed.
    np.testing.assert_allclose(got[wanted], want[wanted], rtol=0, atol=3e-4)


def test_only_near_permutations_take_the_slices():
    coeffs = np.zeros((10, 10), np.float32)
    angle = np.deg2rad(10.0)
    assert orientation(coeffs, [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) is None
    assert orientation(coeffs, [[1.1, 0.0], [0.0, 1.0]]) is None
    assert orientation(coeffs, [[0.0, -1.0], [1.0, 0.0]]).transposed
