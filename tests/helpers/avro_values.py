"""Avro values that find encoder bugs (integers of every varint length, odd strings), and a schema's records."""

from __future__ import annotations

from typing import Any

INT_EXTREMES = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, -8192, 2**31 - 1, -2**31]
"""Avro ``int`` boundaries: every zigzag varint length and both ends of the 32-bit range."""

LONG_EXTREMES = INT_EXTREMES + [2**27, 2**28, 2**41 - 1, 2**41, 2**62, 2**63 - 1, -2**63, -2**63 + 1]
"""Avro ``long`` boundaries: the int ones, longer varints and both ends of the 64-bit range."""

STRINGS = ["", "r", "é", "✓ unicode ✓", "日本語テキスト", "a" * 200, "\U0001f52d"]
"""Strings of every kind: empty, ASCII, multi-byte UTF-8 (two to four bytes a character), long."""


def record_types(parsed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every named record of the (parsed) schema, by full name."""
    found: dict[str, dict[str, Any]] = {}

    def walk(t: Any) -> None:
        if isinstance(t, list):
            for branch in t:
                walk(branch)
        elif isinstance(t, dict):
            if t["type"] == "record" and t["name"] not in found:
                found[t["name"]] = t
                for field in t["fields"]:
                    walk(field["type"])
            elif t["type"] == "array":
                walk(t["items"])

    walk(parsed)
    return found
