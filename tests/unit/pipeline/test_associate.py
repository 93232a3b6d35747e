"""Association: one-to-one within the radius, new objects keyed by their first DiaSource, summaries."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from pipeline.associate import associate, match_one_to_one, summarize_objects, unit_vectors


def _sources(ra, dec, ids, band="r", flux=100.0):
    n = len(ra)
    return Table({"diaSourceId": np.asarray(ids, np.int64), "ra": np.asarray(ra, float),
                  "dec": np.asarray(dec, float), "midpointMjdTai": np.full(n, 61000.0),
                  "raErr": np.full(n, 1e-5), "decErr": np.full(n, 1e-5), "band": np.full(n, band),
                  "psfFlux": np.full(n, flux), "psfFluxErr": np.full(n, 10.0),
                  "scienceFlux": np.full(n, flux), "scienceFluxErr": np.full(n, 10.0)})


def test_one_to_one_closest_first():
    arcsec = 1 / 3600
    src = unit_vectors([10.0, 10.0 + 0.3 * arcsec], [0.0, 0.0])
    obj = unit_vectors([10.0 + 0.2 * arcsec], [0.0])
    s, o = match_one_to_one(src, obj, np.radians(arcsec))
    assert s.tolist() == [1] and o.tolist() == [0]


def test_unmatched_sources_start_objects_with_their_own_id():
    objects = Table({"diaObjectId": np.array([7], np.int64), "ra": [10.0], "dec": [0.0]})
    sources = _sources([10.0 + 0.5 / 3600, 10.0 + 5 / 3600], [0.0, 0.0], [101, 102])
    out, is_new = associate(sources, objects)
    assert out["diaObjectId"].tolist() == [7, 102]
    assert is_new.tolist() == [False, True]
    assert "diaObjectId" not in sources.colnames  # the input is not changed


def test_summaries_from_history_ignore_duplicates():
    history = _sources([10.0, 10.0], [0.0, 0.0], [1, 2], flux=100.0)
    history["diaObjectId"] = np.array([1, 1], np.int64)
    again = history[1:]  # the same DiaSource processed twice must count once
    summary = summarize_objects(np.array([1]), Table(np.concatenate([history.as_array(), again.as_array()])),
                                61001.0)
    assert summary["nDiaSources"][0] == 2
    assert summary["r_psfFluxNdata"][0] == 2
    assert np.isclose(summary["r_psfFluxMean"][0], 100.0)
    assert summary["g_psfFluxNdata"][0] == 0 and np.isnan(summary["g_psfFluxMean"][0])
