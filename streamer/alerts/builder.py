"""Alert packets as projections of APDB rows: one alert per new DiaSource, with the object's 12-month
history and the three cutouts (Rubin alert schema, lsst-alert-packet latest)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.types import CcdOutputs
from streamer.alerts.history_rows import encoded_history
from streamer.apdb.base import RegionData
from streamer.apdb.columns import DIA_FORCED_SOURCE, DIA_OBJECT, DIA_SOURCE
from streamer.apdb.table_rows import table_to_records


def build_alerts(outputs: CcdOutputs, region: RegionData, *, min_reliability: float = 0.0) -> list[dict[str, Any]]:
    """Alert records for the DiaSources of a processed CCD that pass the distribution threshold.

    Parameters
    ----------
    outputs : CcdOutputs
        Pipeline outputs (DiaSources with diaObjectId, updated DiaObjects, cutouts).
    region : RegionData
        The APDB history read before processing (only rows before this visit are used, so a re-run
        produces byte-identical alerts). Each object's history is Avro-encoded here, all rows of the CCD at
        once (:mod:`streamer.alerts.history_rows`); the alert encoder copies those bytes.
    min_reliability : float, optional
        Rubin's ``minReliability``: a DiaSource whose ``reliability`` is below it (or not a number, when the
        threshold is above 0) gets no alert; it stays in the APDB and in later alerts' histories. 0: every one.

    Returns
    -------
    list of dict
        Records of the Rubin ``alert`` schema, in DiaSource id order.
    """
    visit_mjd = outputs.exposure.info.mjd_mid_tai
    prv_sources = encoded_history(DIA_SOURCE, region.dia_sources, visit_mjd)
    prv_forced = encoded_history(DIA_FORCED_SOURCE, region.dia_forced_sources, visit_mjd)
    objects = {int(r["diaObjectId"]): r for r in table_to_records(DIA_OBJECT, outputs.dia_objects)}
    alerts = []
    sources = outputs.dia_sources
    if min_reliability > 0.0 and len(sources):
        sources = sources[np.asarray(sources["reliability"], float) >= min_reliability]  # NaN: not distributed
    for source in table_to_records(DIA_SOURCE, sources):
        object_id = int(source["diaObjectId"])
        science, template, difference = outputs.cutouts.get(source["diaSourceId"], (None, None, None))
        alerts.append({
            "diaSourceId": source["diaSourceId"],
            "observation_reason": None,
            "target_name": None,
            "diaSource": source,
            "prvDiaSources": prv_sources.get(object_id, []),
            "prvDiaForcedSources": prv_forced.get(object_id, []),
            "diaObject": objects.get(object_id),
            "ssSource": None,
            "mpc_orbits": None,
            "cutoutDifference": difference,
            "cutoutScience": science,
            "cutoutTemplate": template,
        })
    return alerts
