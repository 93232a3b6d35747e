"""The reliability model shipped as package data (``pipeline/data/reliability/<version>.npz``), read once per
process.

The shell's side of :mod:`pipeline.reliability`: this module reads the weight file; the pipeline receives the
:class:`~pipeline.reliability.ReliabilityModel` in each CCD's inputs. See ``pipeline/data/reliability/README.md``
for how each version was trained.
"""

from __future__ import annotations

import functools
import io
from importlib import resources
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.reliability import MODEL_VERSION, ReliabilityModel

DATA_PACKAGE = "pipeline"
"""The package whose ``data/reliability/`` folder holds the weight files."""


def read_model(data: bytes, *, name: str = "reliability model") -> ReliabilityModel:
    """A reliability model from the bytes of its ``.npz`` file.

    Raises
    ------
    InputError
        Not an ``.npz`` file of a model's arrays (``stage="load_reliability_model"``).
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return ReliabilityModel.from_arrays({k: arrays[k] for k in arrays.files})
    except (ValueError, OSError, KeyError) as err:
        raise InputError(f"{name}: {err}", stage="load_reliability_model") from err


def write_model(model: ReliabilityModel, path: Path) -> None:
    """Save a model as the ``.npz`` file :func:`read_model` reads (float32 weights, compressed)."""
    np.savez_compressed(path, **model.to_arrays())


@functools.cache
def shipped_model(version: str = MODEL_VERSION) -> ReliabilityModel:
    """The model of ``version`` from the package data (:data:`pipeline.reliability.MODEL_VERSION` by default)."""
    file = resources.files(DATA_PACKAGE) / "data" / "reliability" / f"{version}.npz"
    if not file.is_file():
        raise InputError(f"no reliability model {version!r} in the package data", stage="load_reliability_model")
    return read_model(file.read_bytes(), name=f"reliability model {version}")


__all__ = ["DATA_PACKAGE", "read_model", "shipped_model", "write_model"]
