"""Service configuration: flags, ``BLINK_*`` environment variables, a YAML/JSON file, then defaults.

Each setting takes the first of these that sets it: a command-line flag, then an environment variable, then
the ``--config`` file, then the default. The file has up to four sections::

    blink:      {data_root: night, log_format: json}     # BlinkSettings (BLINK_DATA_ROOT, BLINK_LOG_FORMAT, ...)
    cassandra:  {hosts: 10.0.0.1, username: blink}       # CassandraSettings (BLINK_CASSANDRA_HOSTS, ...)
    kafka:      {bootstrap_servers: broker:9092}         # KafkaSettings (BLINK_KAFKA_BOOTSTRAP, ...)
    pipeline:   {subtract: {stamp_half_size: 14}}        # pipeline.ccd.PipelineConfig
                                                         # (BLINK_PIPELINE__SUBTRACT__STAMP_HALF_SIZE=14)

Every model is frozen and forbids unknown fields, so a misspelled or out-of-range option stops start-up with
an :class:`InvalidSettings` naming the option's path (``pipeline.subtract.stamp_half_sizee``). Environment
variables that name no option of a section (``BLINK_WORKER_ID``, ``BLINK_CASSANDRA_HEAP`` of ops/) are
ignored, except under ``BLINK_PIPELINE__``, where every name must be a stage option.

Embedded default (no servers): events from ``<root>/events``, APDB in ``<root>/out/apdb.sqlite``, alerts as
Avro files in ``<root>/out/alerts``, dead letters in ``<root>/out/dead-letters``. Given a Kafka bootstrap
and Cassandra hosts, the same worker consumes Kafka, writes Cassandra and publishes alerts to Kafka.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as EnvParseError

from pipeline.ccd import PipelineConfig
from pipeline.reliability import DEFAULT_MIN_RELIABILITY
from streamer.runtime.gc_tuning import DEFAULT_GEN0_THRESHOLD
from streamer.runtime.malloc_tuning import DEFAULT_TRIM_THRESHOLD_MB
from streamer.runtime.secret_files import password_from_file

if TYPE_CHECKING:
    from streamer.kafka.settings import KafkaSettings

SECTIONS = ("blink", "cassandra", "kafka", "pipeline")
"""Top-level sections of a settings file."""

CONSISTENCY_LEVELS = ("ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "SERIAL",
                      "LOCAL_SERIAL", "LOCAL_ONE")
"""Names of the Cassandra driver's ``ConsistencyLevel`` values."""


class InvalidSettings(ValueError):
    """A settings file, flag or environment variable that cannot configure Blink; the message names it."""


class CassandraSettings(BaseSettings):
    """Connection to the Cassandra APDB (``BLINK_CASSANDRA_*``)."""

    model_config = SettingsConfigDict(env_prefix="BLINK_CASSANDRA_", frozen=True, extra="forbid")
    hosts: str = Field("", description="Comma-separated contact points; empty = use the embedded SQLite APDB.")
    port: int = Field(9042, ge=1, le=65535, description="Native transport port.")
    keyspace: str = Field("blink_apdb", description="Keyspace of the APDB tables.")
    replication_factor: int = Field(1, ge=1, le=100, description="SimpleStrategy replication factor.")
    replication_datacenters: str | None = Field(
        None, description="Replicas per data centre, 'dc1:3,dc2:3': the keyspace is created with "
                          "NetworkTopologyStrategy (then read and write at LOCAL_QUORUM); replication_factor is "
                          "not used. None: SimpleStrategy (one data centre).")
    consistency: str = Field("LOCAL_QUORUM", description="Consistency level of reads and writes (a name of the "
                                                         "driver's ConsistencyLevel).")
    username: str | None = Field(None, description="Password-authenticator user.")
    password: SecretStr | None = Field(None, description="Password (never logged).")
    password_file: Path | None = Field(None, description="File holding the password (a mounted secret), read at "
                                                         "start when password is not set.")
    ssl_ca: str | None = Field(None, description="CA bundle (PEM) that signed the servers' certificates: connect "
                                                 "with TLS, checking the certificate and host name (ops/secure.sh: "
                                                 "ops/.run/secure/tls/ca.pem); None: no TLS unless the URL says "
                                                 "?ssl=1 (system CAs).")
    ssl_cert: str | None = Field(None, description="Client certificate (PEM) for a Cassandra that requires one "
                                                   "(client_encryption_options.require_client_auth; ops/secure.sh: "
                                                   "ops/.run/secure/tls/client.pem); needs ssl_ca.")
    ssl_key: str | None = Field(None, description="Private key (PEM, unencrypted) of ssl_cert.")
    worker_role: str | None = Field(None, description="`blink apdb init` grants this role what a worker needs on "
                                                      "the keyspace, and no more: SELECT and MODIFY "
                                                      "(streamer.apdb.cassandra.grants).")

    @model_validator(mode="before")
    @classmethod
    def _password_from_its_file(cls, data: Any) -> Any:
        return password_from_file(data, "password", "password_file")

    @field_validator("replication_datacenters")
    @classmethod
    def _datacenters_parse(cls, value: str | None) -> str | None:
        from streamer.apdb.cassandra.schema import parse_datacenters

        parse_datacenters(value)  # raises, naming the entry, on a malformed one
        return value

    @field_validator("consistency")
    @classmethod
    def _known_consistency(cls, value: str) -> str:
        if value.upper() not in CONSISTENCY_LEVELS:
            raise ValueError(f"{value!r} is not one of {', '.join(CONSISTENCY_LEVELS)}")
        return value


class BlinkSettings(BaseSettings):
    """Top-level settings of ``blink run`` (``BLINK_*``), with the pipeline's (``BLINK_PIPELINE__<STAGE>__*``)."""

    model_config = SettingsConfigDict(env_prefix="BLINK_", env_nested_delimiter="__", frozen=True, extra="forbid")
    data_root: Path = Field(Path("blink-data"), description="Data repository (raws, calibrations, templates).")
    out_dir: Path | None = Field(None, description="Outputs of the embedded mode (default <data_root>/out).")
    apdb_url: str | None = Field(None, description="sqlite:///path or cassandra://host[,host]:port/keyspace; "
                                                   "default from the Cassandra settings or the embedded file.")
    source: Literal["local", "kafka"] = Field("local", description="Where events come from.")
    metrics_port: int | None = Field(None, ge=1, le=65535,
                                     description="Serve Prometheus metrics and /healthz on this port.")
    log_format: Literal["text", "json"] = Field("text", description="Console or JSON-lines logs.")
    malloc_trim_threshold_mb: int | None = Field(
        DEFAULT_TRIM_THRESHOLD_MB, ge=1, le=1 << 20,
        description="glibc malloc keeps this much freed memory for reuse, and CCD-sized arrays in its "
                    "heap (streamer.runtime.malloc_tuning): without it, freed alert buffers and images were "
                    "page-faulted back in; None leaves malloc alone.")
    gc_gen0_threshold: int | None = Field(
        DEFAULT_GEN0_THRESHOLD, ge=1, description="Once started, a worker freezes what start-up made (the "
                                "collector no longer walks it) and runs young collections after this many "
                                "allocations (streamer.runtime.gc_tuning): full collections inside APDB stores were "
                                "the slowest stores; None leaves Python's collector alone.")
    pipeline_threads: int = Field(1, ge=1, le=256, description="Threads each worker's pipeline uses "
                                                       "(pipeline.threads): 2 halves a CCD's subtraction on an idle "
                                                       "2-core machine; keep 1 with one worker process per core.")
    ordered_association: bool = Field(True, description="Kafka mode: sky claims in the APDB make overlapping "
                                                        "CCD-visits associate in time order across workers "
                                                        "(streamer.apdb.ordering).")
    min_reliability: float = Field(DEFAULT_MIN_RELIABILITY, ge=0.0, le=1.0, description="Rubin's minReliability: "
                                   "DiaSources whose reliability is below it are stored in the APDB but get no "
                                   "alert; the default was chosen from the shipped model's held-out curves "
                                   "(pipeline.reliability.DEFAULT_MIN_RELIABILITY); 0: every DiaSource is "
                                   "distributed.")
    keep_products_ccds: tuple[int, ...] = Field((), description="CCDNUMs whose intermediate products (calexp, "
                                                "difference image, DiaSource tables, timings, configuration) the "
                                                "worker writes, as blink process does (streamer.products); empty: "
                                                "none (default).")
    products_dir: Path | None = Field(None, description="Folder of the kept products, one <visit>-<ccd> folder "
                                                        "per CCD-visit (default <outputs>/products).")
    pipeline: PipelineConfig = Field(PipelineConfig(), description="Options of every pipeline stage: the "
                                     "file's top-level ``pipeline:`` section, or BLINK_PIPELINE__<STAGE>__<OPTION>.")

    @property
    def outputs(self) -> Path:
        """Folder of embedded outputs."""
        return self.out_dir if self.out_dir is not None else self.data_root / "out"

    @property
    def products(self) -> Path:
        """Folder of the products kept for ``keep_products_ccds``."""
        return self.products_dir if self.products_dir is not None else self.outputs / "products"

    def resolved_apdb_url(self, cassandra: CassandraSettings) -> str:
        """The APDB URL in force."""
        if self.apdb_url:
            return self.apdb_url
        if cassandra.hosts:
            return f"cassandra://{cassandra.hosts}:{cassandra.port}/{cassandra.keyspace}"
        return f"sqlite:///{(self.outputs / 'apdb.sqlite').resolve()}"


def load_config_file(path: str | Path | None) -> dict[str, Any]:
    """Read a YAML or JSON settings file into a dict of sections (empty when ``path`` is None).

    Raises
    ------
    InvalidSettings
        The file is missing, unreadable, not a mapping, or has a section other than :data:`SECTIONS`.
    """
    if path is None:
        return {}
    try:
        text = Path(path).read_text()
        content = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise InvalidSettings(f"settings file {path}: {err}".replace("\n", " ")) from err
    content = content or {}
    if not isinstance(content, dict):
        raise InvalidSettings(f"settings file {path}: expected sections {', '.join(SECTIONS)}, got "
                              f"{type(content).__name__}")
    unknown = sorted(set(content) - set(SECTIONS))
    if unknown:
        raise InvalidSettings(f"settings file {path}: unknown section {', '.join(map(str, unknown))} "
                              f"(sections: {', '.join(SECTIONS)})")
    for name, section in content.items():
        if section is not None and not isinstance(section, dict):
            raise InvalidSettings(f"settings file {path}: section {name} must be a mapping of options")
    if "pipeline" in (content.get("blink") or {}):
        raise InvalidSettings(f"settings file {path}: pipeline options go in the top-level pipeline section")
    return content


Settings = TypeVar("Settings", bound=BaseSettings)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``override``, mappings merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _problems(err: ValidationError, section: str) -> str:
    """One line naming each invalid option by its path in the settings file."""
    lines = []
    for problem in err.errors():
        loc = [str(part) for part in problem["loc"]]
        path = loc if (section == "blink" and loc[:1] == ["pipeline"]) else [section, *loc]
        lines.append(f"{'.'.join(path)}: {problem['msg']}")
    return "; ".join(lines)


def layered(cls: type[Settings], section: str, file_values: Mapping[str, Any] | None = None,
            flags: Mapping[str, Any] | None = None) -> Settings:
    """Build one settings section: ``flags``, then the environment, then ``file_values``, then defaults.

    Parameters
    ----------
    cls : type of BaseSettings
        The section's model; it reads its own environment variables.
    section : str
        Name of the section (in messages).
    file_values, flags : mapping, optional
        The section of the settings file, and the options given on the command line.

    Raises
    ------
    InvalidSettings
        Naming every invalid option, e.g. ``pipeline.subtract.stamp_half_size: Input should be greater than 0``.
    """
    try:
        from_env = cls().model_dump(exclude_unset=True)
        return cls(**_deep_merge(_deep_merge(file_values or {}, from_env), flags or {}))
    except ValidationError as err:
        raise InvalidSettings(f"invalid settings: {_problems(err, section)}") from err
    except EnvParseError as err:
        raise InvalidSettings(f"invalid settings ({section} environment variables): {err}") from err


@dataclass(frozen=True)
class ServiceSettings:
    """Every section of the settings in force: the service's, the APDB's, Kafka's and the pipeline's.

    ``kafka`` is always built (``blink topics create`` and ``blink publish`` use it); the worker consumes
    Kafka only when ``blink.source`` is ``kafka`` (:attr:`kafka_source`).
    """

    blink: BlinkSettings
    cassandra: CassandraSettings
    kafka: KafkaSettings

    @property
    def pipeline(self) -> PipelineConfig:
        """The pipeline's configuration (``blink.pipeline``)."""
        return self.blink.pipeline

    @property
    def kafka_source(self) -> KafkaSettings | None:
        """The Kafka settings when the worker consumes Kafka, else None (embedded mode)."""
        return self.kafka if self.blink.source == "kafka" else None

    def effective(self) -> dict[str, dict[str, Any]]:
        """Every setting in force, defaults included, as plain JSON-like values in the file's sections;
        secrets show as ``**********``."""
        return {"blink": self.blink.model_dump(mode="json", exclude={"pipeline"}),
                "cassandra": self.cassandra.model_dump(mode="json"),
                "kafka": self.kafka.model_dump(mode="json"),
                "pipeline": self.pipeline.model_dump(mode="json")}

    def to_yaml(self) -> str:
        """:meth:`effective` as YAML, in the layout of a settings file."""
        return yaml.safe_dump(self.effective(), sort_keys=False)


def load_settings(config_file: str | Path | None = None, *, blink: Mapping[str, Any] | None = None,
                  cassandra: Mapping[str, Any] | None = None,
                  kafka: Mapping[str, Any] | None = None) -> ServiceSettings:
    """The settings in force: flags (``blink``, ``cassandra``, ``kafka``), ``BLINK_*`` variables, the file.

    Parameters
    ----------
    config_file : path, optional
        YAML or JSON settings file (sections :data:`SECTIONS`).
    blink, cassandra, kafka : mapping, optional
        Options given on the command line, per section.

    Raises
    ------
    InvalidSettings
        A misspelled section or option, or a value out of its bounds; the message names it.
    """
    from streamer.kafka.settings import KafkaSettings

    file_conf = load_config_file(config_file)
    blink_file = dict(file_conf.get("blink") or {})
    if file_conf.get("pipeline") is not None:
        blink_file["pipeline"] = file_conf["pipeline"]
    return ServiceSettings(blink=layered(BlinkSettings, "blink", blink_file, blink),
                           cassandra=layered(CassandraSettings, "cassandra", file_conf.get("cassandra"), cassandra),
                           kafka=layered(KafkaSettings, "kafka", file_conf.get("kafka"), kafka))
