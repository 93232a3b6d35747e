"""Named mask bits of the mask plane, in the spirit of Rubin's afw mask planes."""

from __future__ import annotations

import enum


class MaskBit(enum.IntFlag):
    """Bits of the int32 mask plane.

    BAD: a known defect (bad column, hot pixel). SAT: at or above the amplifier's saturation level.
    CR: a cosmic ray. EDGE: too close to the CCD edge for a full measurement. INTRP: the value was
    interpolated (over a CR, defect or saturation). DETECTED: part of a detected footprint on the
    science image. DETECTED_NEGATIVE: part of a negative footprint on the difference image. SUSPECT: above
    the linearity limit but below saturation. NO_DATA: no valid data (e.g. no template coverage).
    """

    BAD = 1 << 0
    SAT = 1 << 1
    INTRP = 1 << 2
    CR = 1 << 3
    EDGE = 1 << 4
    DETECTED = 1 << 5
    DETECTED_NEGATIVE = 1 << 6
    SUSPECT = 1 << 7
    NO_DATA = 1 << 8


UNUSABLE = MaskBit.BAD | MaskBit.SAT | MaskBit.CR | MaskBit.NO_DATA
"""Bits whose pixels must not enter a fit or a flux."""
