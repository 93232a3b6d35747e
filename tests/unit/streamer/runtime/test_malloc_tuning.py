"""keep_freed_memory stops freed alert-sized buffers from being page-faulted back in, batch after batch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_SCRIPT = """
import json, resource, sys
from streamer.runtime.malloc_tuning import keep_freed_memory
ok = keep_freed_memory(256) if sys.argv[1] == "tuned" else None
def batch():  # 500 alert-sized buffers made and dropped, as a worker does per CCD-visit
    return [bytes(bytearray(66_000)) for _ in range(500)]
batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    batch()
print(json.dumps({"ok": ok, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _run(mode: str, script: str = _SCRIPT) -> dict:
    out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_buffers_are_reused():
    default, tuned = _run("default"), _run("tuned")
    assert tuned["ok"] is True
    # 10 batches of 500 x 66 kB touch 80,000 fresh pages when the heap is trimmed after each batch.
    assert default["faults"] > 20_000
    assert tuned["faults"] < default["faults"] / 10


_CCD_SCRIPT = """
import json, resource, sys
import numpy as np
from streamer.runtime.malloc_tuning import keep_freed_memory
ok = keep_freed_memory() if sys.argv[1] == "tuned" else None
def ccd():  # a few full-CCD float32 arrays (33.5 MB each), made, filled and dropped, as process_ccd does
    arrays = [np.ones((4096, 2048), np.float32) for _ in range(4)]
    return float(sum(a[0, 0] for a in arrays))
ccd()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    ccd()
print(json.dumps({"ok": ok, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_ccd_sized_arrays_are_reused():
    default, tuned = _run("default", _CCD_SCRIPT), _run("tuned", _CCD_SCRIPT)
    assert tuned["ok"] is True
    # 5 rounds of 4 x 33.5 MB: 163,840 fresh 4 kB pages when every array is its own mapping (far fewer faults
    # with transparent huge pages: about 10,000 here).
    assert default["faults"] > 300
    assert tuned["faults"] < default["faults"] / 10
