"""Service configuration: flags, ``BLINK_*`` environment variables or a YAML/JSON file, in that order.

Embedded default (no servers): events from ``<root>/events``, APDB in ``<root>/out/apdb.sqlite``, alerts as
Avro files in ``<root>/out/alerts``, dead letters in ``<root>/out/dead-letters``. Given a Kafka bootstrap
and Cassandra hosts, the same worker consumes Kafka, writes Cassandra and publishes alerts to Kafka.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamer.runtime.gc_tuning import DEFAULT_GEN0_THRESHOLD
from streamer.runtime.malloc_tuning import DEFAULT_TRIM_THRESHOLD_MB


class CassandraSettings(BaseSettings):
    """Connection to the Cassandra APDB (``BLINK_CASSANDRA_*``)."""

    model_config = SettingsConfigDict(env_prefix="BLINK_CASSANDRA_", frozen=True, extra="ignore")
    hosts: str = Field("", description="Comma-separated contact points; empty = use the embedded SQLite APDB.")
    port: int = Field(9042, description="Native transport port.")
    keyspace: str = Field("blink_apdb", description="Keyspace of the APDB tables.")
    replication_factor: int = Field(1, ge=1, description="SimpleStrategy replication factor.")
    consistency: str = Field("LOCAL_QUORUM", description="Consistency level of reads and writes.")
    username: str | None = Field(None, description="Password-authenticator user.")
    password: SecretStr | None = Field(None, description="Password (never logged).")
    ssl_ca: str | None = Field(None, description="CA bundle to enable TLS.")


class BlinkSettings(BaseSettings):
    """Top-level settings of ``blink run``."""

    model_config = SettingsConfigDict(env_prefix="BLINK_", frozen=True, extra="ignore")
    data_root: Path = Field(Path("blink-data"), description="Data repository (raws, calibrations, templates).")
    out_dir: Path | None = Field(None, description="Outputs of the embedded mode (default <data_root>/out).")
    apdb_url: str | None = Field(None, description="sqlite:///path or cassandra://host[,host]:port/keyspace; "
                                                   "default from the Cassandra settings or the embedded file.")
    source: Literal["local", "kafka"] = Field("local", description="Where events come from.")
    metrics_port: int | None = Field(None, description="Serve Prometheus metrics and /healthz on this port.")
    log_format: Literal["text", "json"] = Field("text", description="Console or JSON-lines logs.")
    malloc_trim_threshold_mb: int | None = Field(
        DEFAULT_TRIM_THRESHOLD_MB, ge=1, description="glibc malloc keeps this much freed memory for reuse, and CCD-sized arrays in its "
                                "heap (streamer.runtime.malloc_tuning): without it, freed alert buffers and images were "
                                "page-faulted back in; None leaves malloc alone.")
    gc_gen0_threshold: int | None = Field(
        DEFAULT_GEN0_THRESHOLD, ge=1, description="Once started, a worker freezes what start-up made (the "
                                "collector no longer walks it) and runs young collections after this many "
                                "allocations (streamer.runtime.gc_tuning): full collections inside APDB stores were "
                                "the slowest stores; None leaves Python's collector alone.")
    pipeline_threads: int = Field(1, ge=1, description="Threads each worker's pipeline uses "
                                                       "(pipeline.threads): 2 halves a CCD's subtraction on an idle "
                                                       "2-core machine; keep 1 with one worker process per core.")
    ordered_association: bool = Field(True, description="Kafka mode: sky claims in the APDB make overlapping "
                                                        "CCD-visits associate in time order across workers "
                                                        "(streamer.apdb.ordering).")

    @property
    def outputs(self) -> Path:
        """Folder of embedded outputs."""
        return self.out_dir if self.out_dir is not None else self.data_root / "out"

    def resolved_apdb_url(self, cassandra: CassandraSettings) -> str:
        """The APDB URL in force."""
        if self.apdb_url:
            return self.apdb_url
        if cassandra.hosts:
            return f"cassandra://{cassandra.hosts}:{cassandra.port}/{cassandra.keyspace}"
        return f"sqlite:///{(self.outputs / 'apdb.sqlite').resolve()}"


def load_config_file(path: str | Path | None) -> dict[str, Any]:
    """Read a YAML or JSON configuration file into a dict (empty when ``path`` is None)."""
    if path is None:
        return {}
    text = Path(path).read_text()
    return json.loads(text) if str(path).endswith(".json") else (yaml.safe_load(text) or {})
