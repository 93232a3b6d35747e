"""DECam simulator: ``simulate(root, SimConfig(...))`` writes a full Blink data repository."""

from .config import SimConfig
from .core import SimSummary, simulate

__all__ = ["SimConfig", "SimSummary", "simulate"]
