"""Provenance of a run: the configuration in force and the versions of the code that ran.

As ``ApPipeTask``'s ``writeConfig`` and ``writePackageVersions`` do for the LSST pipelines, every ``blink run``
records what produced its outputs: the effective settings (defaults included, secrets masked), Blink's version
and those of Python and the packages that shape the numbers and the bytes written. The record has no clock
and no host in it, so identical runs record identical text under the same key (:func:`provenance_key`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import yaml

log = logging.getLogger(__name__)

BLINK_DISTRIBUTION = "blink"
"""Name of Blink's installed distribution."""

RECORDED_PACKAGES = ("numpy", "scipy", "astropy", "sep", "fastavro", "confluent-kafka", "cassandra-driver",
                     "lz4", "lsst-alert-packet", "pydantic", "pydantic-settings")
"""Distributions whose versions a run records: the science stack, the formats and clients that write the
alerts and the APDB, and the configuration models."""

PROVENANCE_FILE = "provenance.yaml"
"""Name of the provenance file in the embedded output folder."""

NOT_INSTALLED = "not installed"


class ProvenanceRecorder(Protocol):
    """What recording provenance needs of an APDB."""

    def record_provenance(self, key: str, text: str) -> None:
        """Store ``text`` under ``key`` in the metadata."""


def package_version(name: str) -> str:
    """Installed version of the distribution ``name``, or ``"not installed"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def package_versions(names: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str]:
    """Versions of ``python`` and of each distribution of ``names``, in that order."""
    return {"python": platform.python_version(), **{name: package_version(name) for name in names}}


def build_provenance(configuration: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance record of a run.

    Parameters
    ----------
    configuration : mapping
        The effective settings as plain values, secrets masked
        (:meth:`streamer.settings.ServiceSettings.effective`).

    Returns
    -------
    dict
        ``{"blink_version": ..., "packages": {"python": ..., "numpy": ..., ...}, "configuration": {...}}``.
    """
    return {"blink_version": package_version(BLINK_DISTRIBUTION), "packages": package_versions(),
            "configuration": json.loads(json.dumps(configuration))}


def provenance_text(provenance: Mapping[str, Any]) -> str:
    """``provenance`` as YAML, keys in their given order."""
    return yaml.safe_dump(dict(provenance), sort_keys=False)


def provenance_key(text: str) -> str:
    """Key of a provenance record in the APDB metadata: ``provenance:`` and 16 hex digits of its SHA-256.

    The same configuration and versions give the same key, so the workers of one deployment (and its
    restarts) share one entry, and each change of configuration or software adds one.
    """
    return "provenance:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def write_provenance_file(folder: Path, text: str) -> Path:
    """Write ``text`` to ``<folder>/provenance.yaml`` (replacing an earlier run's) and return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PROVENANCE_FILE
    path.write_text(text)
    return path


def record_run_provenance(configuration: Mapping[str, Any], apdb: ProvenanceRecorder,
                          folder: Path | None = None) -> str:
    """Record a run's provenance in the APDB metadata and, when ``folder`` is given, as a file there.

    Parameters
    ----------
    configuration : mapping
        The effective settings, secrets masked (see :func:`build_provenance`).
    apdb : ProvenanceRecorder
        An opened APDB (:meth:`streamer.apdb.base.Apdb.record_provenance`).
    folder : Path, optional
        The embedded output folder: ``provenance.yaml`` is written there.

    Returns
    -------
    str
        The record's key in the APDB metadata (:func:`provenance_key`).
    """
    text = provenance_text(build_provenance(configuration))
    key = provenance_key(text)
    apdb.record_provenance(key, text)
    if folder is not None:
        log.info("provenance %s recorded in the APDB and %s", key, write_provenance_file(folder, text))
    else:
        log.info("provenance %s recorded in the APDB", key)
    return key
