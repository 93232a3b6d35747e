"""The alert schema's registry text is the same in every process (a registry identifies schemas by text)."""

from __future__ import annotations

import os
import subprocess
import sys

SNIPPET = ("from streamer.alerts.schema import AlertSchema; from streamer.alerts.registry import avro_schema_json; "
           "print(avro_schema_json(AlertSchema.latest().definition))")


def test_schema_text_does_not_depend_on_the_hash_seed():
    texts = {subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, check=True,
                            env=os.environ | {"PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2, 3)}
    assert len(texts) == 1
    assert '"name": "lsst.v11_1.alert"' in texts.pop()
