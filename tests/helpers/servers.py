"""Whether the real servers (Kafka, Cassandra, the schema registry) must answer: fail in CI, skip elsewhere."""

from __future__ import annotations

import os

import pytest


def require_servers() -> bool:
    """True in CI (``BLINK_REQUIRE_SERVERS=1``): a missing server fails the test instead of skipping it."""
    return os.environ.get("BLINK_REQUIRE_SERVERS") == "1"


def unavailable(reason: str) -> None:
    """Fail in CI, skip elsewhere."""
    if require_servers():
        pytest.fail(reason)
    pytest.skip(reason)
