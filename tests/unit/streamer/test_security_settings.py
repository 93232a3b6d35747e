"""The security settings and what they ask of the servers, without servers: the ACLs of the two Kafka users
(``streamer.kafka.acls``), and the schema check that spares a worker's role any schema statement."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AclOperation, AclPermissionType, ResourcePatternType, ResourceType

from streamer.apdb.sqlite_store import SqliteApdb
from streamer.kafka.acls import configured_acls
from streamer.kafka.settings import KafkaSettings
from streamer.settings import load_settings


def test_acl_settings_from_the_environment_grant_each_user_its_own(monkeypatch):
    monkeypatch.setenv("BLINK_KAFKA_ACL_WORKER_USER", "blink-worker")
    monkeypatch.setenv("BLINK_KAFKA_ACL_ALERT_READER_USERS", '["fink", "antares"]')
    kafka = load_settings().kafka
    assert kafka.acl_alert_reader_users == ("fink", "antares")
    grants = {(b.principal, b.restype, b.name, b.resource_pattern_type, b.operation) for b in configured_acls(kafka)}
    topic, group, txn = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
    literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    read, write = AclOperation.READ, AclOperation.WRITE
    assert grants == {
        ("User:blink-worker", topic, "blink.exposures", literal, read),
        ("User:blink-worker", topic, "blink.ccd-work", literal, read),
        ("User:blink-worker", topic, "blink.ccd-work", literal, write),
        ("User:blink-worker", topic, "blink.alerts.v11", literal, write),
        ("User:blink-worker", topic, "blink.dead-letter", literal, write),
        ("User:blink-worker", group, "blink-workers", literal, read),
        ("User:blink-worker", txn, "blink-workers.", prefixed, write),
        *{(f"User:{user}", kind, name, pattern, read) for user in ("fink", "antares")
          for kind, name, pattern in ((topic, "blink.alerts.v11", literal), (group, user, prefixed))}}
    assert all(b.permission_type == AclPermissionType.ALLOW and b.host == "*" for b in configured_acls(kafka))


def test_no_acl_without_the_settings():
    assert configured_acls(KafkaSettings()) == []


def test_a_store_at_this_schema_version_is_current(tmp_path):
    apdb = SqliteApdb(tmp_path / "apdb.sqlite")
    try:
        assert not apdb.schema_is_current()  # a worker's first start initialises it
        apdb.init_schema()
        assert apdb.schema_is_current()  # later starts run no schema statement
        apdb._write_metadata("schema_version", "4.0.0")
        assert not apdb.schema_is_current()  # an older minor version: init_schema upgrades it
    finally:
        apdb.close()


def test_passwords_from_files_and_named_errors(tmp_path, monkeypatch):
    from streamer.settings import CassandraSettings, InvalidSettings

    secret = tmp_path / "kafka-password"
    secret.write_text("s3cr3t-kafka\n")
    (tmp_path / "cassandra-password").write_text("s3cr3t-cassandra")
    monkeypatch.setenv("BLINK_KAFKA_SASL_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("BLINK_CASSANDRA_PASSWORD_FILE", str(tmp_path / "cassandra-password"))
    settings = load_settings()
    assert settings.kafka.common_config()["sasl.password"] == "s3cr3t-kafka"  # the newline dropped
    assert settings.cassandra.password.get_secret_value() == "s3cr3t-cassandra"
    assert "s3cr3t" not in repr(settings.kafka) + repr(settings.cassandra)
    # a password given as such wins over the file
    assert KafkaSettings(sasl_password="given", sasl_password_file=secret).sasl_password.get_secret_value() == "given"
    monkeypatch.setenv("BLINK_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(InvalidSettings, match="sasl_password_file: cannot read .*missing"):
        load_settings()
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="password_file: .*empty is empty"):
        CassandraSettings(password_file=tmp_path / "empty")
