"""Where the tests find the project's read-only reference material (``../shared/reference``)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout's root folder."""

REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"
"""``shared/reference`` beside the checkout: real headers, cutouts, Gaia chunks (tests only, never the product)."""

DECAM_REFERENCE_DIR = REFERENCE_DIR / "decam"
"""Real DECam headers, camera tables, crosstalk and defect lists."""
