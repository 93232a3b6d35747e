"""Logging set-up: readable console lines, or JSON lines carrying structured context for operators."""

from __future__ import annotations

import json
import logging
import time
import warnings

_CONTEXT_FIELDS = ("visit", "detector", "topic", "partition", "offset", "stage")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with any of the context fields passed through ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for name in _CONTEXT_FIELDS:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Configure the root logger once."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("cassandra").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="astropy")
    from astropy.utils.exceptions import AstropyWarning

    warnings.simplefilter("ignore", AstropyWarning)
