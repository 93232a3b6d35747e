"""keep_freed_memory stops freed alert-sized buffers from being page-faulted back in, batch after batch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_SCRIPT = """
import json, resource, sys
from streamer.malloc_tuning import keep_freed_memory
ok = keep_freed_memory(256) if sys.argv[1] == "tuned" else None
def batch():  # 500 alert-sized buffers made and dropped, as a worker does per CCD-visit
    return [bytes(bytearray(66_000)) for _ in range(500)]
batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    batch()
print(json.dumps({"ok": ok, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_buffers_are_reused():
    default, tuned = _run("default"), _run("tuned")
    assert tuned["ok"] is True
    # 10 batches of 500 x 66 kB touch 80,000 fresh pages when the heap is trimmed after each batch.
    assert default["faults"] > 20_000
    assert tuned["faults"] < default["faults"] / 10
