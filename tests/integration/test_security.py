"""Security, tested rather than configured: Blink on the secured Kafka and Cassandra of ``ops/secure.sh``.

Kafka: SASL/SCRAM-SHA-512 over TLS on 127.0.0.1:9094, StandardAuthorizer with the ACLs of
``streamer.kafka.acls``. Cassandra on 127.0.0.5: PasswordAuthenticator, CassandraAuthorizer, client-to-node TLS
required, the workers' role with SELECT and MODIFY on its keyspace only. ``tests/run.sh`` starts both
(``ops/secure.sh up``); under ``BLINK_REQUIRE_SERVERS=1`` the tests fail when they are not up.

- One simulated CCD-visit goes the whole way authenticated: an operator (the admin users) creates the private
  topics with their ACLs and the keyspace with its grants through ``blink topics create`` and ``blink apdb init``,
  the telescope (admin) publishes the event (and one whose raw is missing), a worker (the workers' users)
  processes them, the alert broker's user reads every alert in a group named after itself; the APDB's DiaSources
  equal the alerts one for one, and the dead letter of the other is on its topic.
- Refused: an unauthenticated client, a wrong password, a plaintext client on the TLS port (Kafka and
  Cassandra), a client without a certificate where one is required (Cassandra; Kafka's 9095 and 9096), the
  alert broker writing alerts, reading events, work or dead letters, or using another group, the workers
  creating a topic or changing a schema, Cassandra's default superuser.
- No password, nor any line of a private key, appears in the worker's log, its metrics, the servers' logs or
  the APDB's recorded provenance.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from simulator import SimConfig
from streamer.alerts.schema import AlertSchema
from streamer.apdb import open_apdb
from streamer.apdb.bookkeeping import METADATA_TABLE
from streamer.events.dead_letters import decode_dead_letter
from streamer.events.files import read_event_file
from streamer.kafka.producer import publish_event
from streamer.kafka.settings import KafkaSettings
from streamer.simulated import simulated_repository
from tests.helpers.kafka_topics import unique_kafka_settings
from tests.helpers.secure_servers import (
    SECURE_DIR,
    as_kafka_user,
    cassandra_apdb,
    read_credentials,
    secrets,
    security_env,
)
from tests.helpers.servers import unavailable
from tests.helpers.worker_runs import REPO, end_workers, wait_for, work_done, worker_env

pytestmark = pytest.mark.integration

REFUSAL_TIMEOUT_S = 6.0
"""How long a refused Kafka client is given to fail (a refused TLS handshake never answers: it times out)."""


def _client(creds: dict[str, str], **conf) -> dict:
    return {"bootstrap.servers": creds["BLINK_SECURE_KAFKA_BOOTSTRAP"], "socket.timeout.ms": 4000,
            "log_level": 0, **conf}


def _sasl(creds: dict[str, str], who: str, **conf) -> dict:
    return _client(creds, **{"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                             "sasl.username": creds[f"BLINK_SECURE_KAFKA_{who}_USER"],
                             "sasl.password": creds[f"BLINK_SECURE_KAFKA_{who}_PASSWORD"],
                             "ssl.ca.location": creds["BLINK_SECURE_CA"], **conf})


@pytest.fixture(scope="module")
def creds() -> dict[str, str]:
    """The secured servers' credentials, once both answered an authenticated request over TLS."""
    try:
        found = read_credentials()
        AdminClient(_sasl(found, "ADMIN")).list_topics(timeout=10)
        cassandra_apdb(found, "ADMIN", "system", connect_timeout_s=10).close()
    except Exception as err:  # missing file, refused or absent server
        unavailable(f"the secured servers of ops/secure.sh are not up ({SECURE_DIR}): {err!r}")
    return found


@pytest.fixture(scope="module")
def one_ccd_night(tmp_path_factory) -> Path:
    """One exposure of one CCD, small mode (about 8 s to make)."""
    root = tmp_path_factory.mktemp("secure-night")
    simulated_repository(root, SimConfig(seed=11, n_epochs=1, ccds=[28], small=True))
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _blink(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "streamer.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def read_topic_as(kafka_conf: dict, topic: str, idle_s: float = 4.0) -> list:
    """Every committed message of ``topic``, read with ``kafka_conf`` (its user; a new group unless it names one),
    until ``idle_s`` seconds without one; any error fails the test."""
    consumer = Consumer({"group.id": f"{kafka_conf.get('sasl.username')}-{uuid.uuid4().hex[:8]}"} | kafka_conf
                        | {"auto.offset.reset": "earliest", "enable.auto.commit": False,
                           "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    out, last = [], time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            out.append(msg)
            last = time.monotonic()
    finally:
        consumer.close()
    return out


def _server_logs() -> dict[str, str]:
    return {str(p.relative_to(SECURE_DIR)): p.read_text(errors="replace")
            for p in sorted(SECURE_DIR.glob("*/logs/*")) if p.is_file()}


@pytest.mark.timeout(420)
def test_one_ccd_the_whole_way_authenticated(creds, one_ccd_night, tmp_path):
    t0 = time.monotonic()
    base = unique_kafka_settings(creds["BLINK_SECURE_KAFKA_BOOTSTRAP"], "secure", session_timeout_s=10.0)
    tag = base.group_id.rsplit("-", 1)[-1]
    keyspace = f"secure_{tag}"
    reader = creds["BLINK_SECURE_KAFKA_READER_USER"]
    # The operator, as the admin users: topics with the ACLs of both users, the keyspace with the workers' grants.
    admin_env = worker_env(base, **security_env(creds, "ADMIN"), BLINK_CASSANDRA_KEYSPACE=keyspace,
                           BLINK_KAFKA_ACL_WORKER_USER=creds["BLINK_SECURE_KAFKA_WORKER_USER"],
                           BLINK_KAFKA_ACL_ALERT_READER_USERS=json.dumps([reader]),
                           BLINK_CASSANDRA_WORKER_ROLE=creds["BLINK_SECURE_CASSANDRA_WORKER_USER"])
    _blink(admin_env, "topics", "create")
    _blink(admin_env, "apdb", "init")
    # The telescope (admin) announces an exposure whose raw is missing (a dead letter), then the good one.
    admin_kafka = as_kafka_user(base, creds, "ADMIN")
    (event_file,) = sorted((one_ccd_night / "events").glob("*.avro"))
    good = read_event_file(event_file)
    bad = dataclasses.replace(good, event_id="DECam-missing-raw", exposure_id=good.exposure_id + 1,
                              raw_path="raw/nope.fits")
    publish_event(admin_kafka, bad)
    publish_event(admin_kafka, good)
    # The worker, as the workers' users only.
    metrics_port = _free_port()
    env = worker_env(base, **security_env(creds, "WORKER"), BLINK_CASSANDRA_KEYSPACE=keyspace,
                     BLINK_SOURCE="kafka", BLINK_METRICS_PORT=str(metrics_port))
    log_path = tmp_path / "worker.log"
    proc = subprocess.Popen([sys.executable, "-m", "streamer.cli", "run", "--forever", "--root", str(one_ccd_night),
                             "--worker-id", f"secure-{tag}"], cwd=REPO, env=env, stdout=open(log_path, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    apdb = cassandra_apdb(creds, "ADMIN", keyspace)
    try:
        wait_for(lambda: work_done(admin_kafka) >= 1, 240, "the CCD committed", proc, log_path)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
            metrics_text = resp.read().decode()
        proc.send_signal(15)
        assert proc.wait(60) == 0, log_path.read_text(errors="replace")[-4000:]
        worker_log = log_path.read_text(errors="replace")
        assert " alerts in " in worker_log
        # The dead letter, written by the workers' user, read back by the operator.
        dead = [decode_dead_letter(m.value()) for m in read_topic_as(_sasl(creds, "ADMIN"), base.dead_letter_topic)]
        assert [(d["sourceTopic"], d["reason"], d["stage"]) for d in dead] == [(base.events_topic, "bad_input",
                                                                               "read_raw")]
        assert "nope.fits" in dead[0]["message"]
        source_ids = sorted(np.asarray(apdb.dump_tables()["DiaSource"]["diaSourceId"]).tolist())
        assert source_ids, "no DiaSources in the APDB"
        # The alert broker reads them all, in a group named after itself.
        schema = AlertSchema.latest()
        alert_ids = sorted(schema.deserialize(m.value())["diaSourceId"] for m in read_topic_as(
            _sasl(creds, "READER", **{"group.id": f"{reader}-{tag}"}), base.alerts_topic))
        assert alert_ids == source_ids  # one committed alert per DiaSource
        # No secret anywhere it could leak: the worker's log, its metrics, the servers' logs, the provenance.
        provenance = "\n".join(f"{k}={v}" for k, v in apdb.execute(
            f"SELECT name, value FROM {apdb.table_name(METADATA_TABLE)}"))
        assert "provenance" in provenance  # the worker recorded its settings (secrets masked)
        places = {"worker log": worker_log, "metrics": metrics_text, "APDB metadata": provenance,
                  **_server_logs()}
        assert len(places) >= 6  # the worker's log, metrics, provenance; each server's log and stdout
        leaks = [(name, where) for name, secret in secrets(creds).items() for where, text in places.items()
                 if secret in text]
        assert leaks == [], f"secrets found: {leaks}"
        print(f"secure path: {len(source_ids)} DiaSources = alerts read by {reader}; {len(secrets(creds))} secrets "
              f"absent from {len(places)} logs, metrics and provenance; {time.monotonic() - t0:.0f} s")
    finally:
        end_workers(proc)
        apdb.drop_keyspace()
        apdb.close()


def _kafka_refusal(conf: dict) -> str:
    """The errors a client with ``conf`` meets when its metadata request fails (the test fails if it succeeds)."""
    errors: list[KafkaError] = []
    admin = AdminClient(conf | {"error_cb": errors.append})
    with pytest.raises(KafkaException) as refused:
        admin.list_topics(timeout=REFUSAL_TIMEOUT_S)
    admin.poll(0.5)  # serves error_cb
    return "; ".join(str(e) for e in [*errors, refused.value.args[0]])


def _first_error(consumer: Consumer, topic: str, timeout_s: float = 15.0) -> KafkaError:
    """The first error a consumer of ``topic`` meets (the test fails if it reads a message or meets none)."""
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is not None, f"read a message of {topic}"
                return msg.error()
    except KafkaException as exc:
        return exc.args[0]
    finally:
        consumer.close()
    pytest.fail(f"no error reading {topic} within {timeout_s} s")


def test_kafka_refuses_who_it_should(creds):
    bootstrap_tls = {"security.protocol": "SSL", "ssl.ca.location": creds["BLINK_SECURE_CA"]}
    worker, password = creds["BLINK_SECURE_KAFKA_WORKER_USER"], creds["BLINK_SECURE_KAFKA_WORKER_PASSWORD"]
    refused = {  # run at once: each waits REFUSAL_TIMEOUT_S
        # Unauthenticated: TLS without SASL, and plaintext, on the SASL_SSL port; a wrong password.
        "TLS, no SASL": _client(creds, **bootstrap_tls),
        "plaintext": _client(creds, **{"security.protocol": "PLAINTEXT"}),
        "SASL without TLS": _client(creds, **{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                                              "sasl.username": worker, "sasl.password": password}),
        "wrong password": _sasl(creds, "WORKER", **{"sasl.password": uuid.uuid4().hex}),
        # The SSL listeners with client certificates (inter-broker, controller) refuse a client without one.
        **{f"port {port} without a certificate": _client(creds, **bootstrap_tls,
                                                          **{"bootstrap.servers": f"127.0.0.1:{port}"})
           for port in (9095, 9096)}}
    with ThreadPoolExecutor(len(refused)) as pool:
        why = dict(zip(refused, pool.map(_kafka_refusal, refused.values())))
    assert "Authentication failed" in why["wrong password"], why
    # With the clients' certificate (Blink's settings) the SSL listener admits it, as User:CN=blink-client, whom
    # no ACL allows anything: the brokers are listed, no topic is.
    by_certificate = KafkaSettings(bootstrap_servers="127.0.0.1:9095", security_protocol="SSL",
                                   ssl_ca_location=creds["BLINK_SECURE_CA"],
                                   ssl_certificate_location=creds["BLINK_SECURE_CLIENT_CERT"],
                                   ssl_key_location=creds["BLINK_SECURE_CLIENT_KEY"])
    metadata = AdminClient(by_certificate.common_config()).list_topics(timeout=10)
    assert list(metadata.brokers) == [1] and not metadata.topics
    # The alert broker's user: it reads alerts (in its own groups), nothing else.
    reader = creds["BLINK_SECURE_KAFKA_READER_USER"]
    topics = {"alerts": "blink.alerts.v11", "events": "blink.exposures", "work": "blink.ccd-work",
              "dead letters": "blink.dead-letter"}
    producer = Producer(_sasl(creds, "READER", **{"acks": "1", "enable.idempotence": False,
                                                  "message.timeout.ms": 10000}))
    errors: list[KafkaError] = []
    producer.produce(topics["alerts"], b"not an alert", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(15)
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    own_group = {"group.id": f"{reader}-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
    for name in ("events", "work", "dead letters"):
        err = _first_error(Consumer(_sasl(creds, "READER", **own_group)), topics[name])
        assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (name, err)
    err = _first_error(Consumer(_sasl(creds, "READER", **{"group.id": f"other-{uuid.uuid4().hex[:8]}"})),
                       topics["alerts"])
    assert err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err
    # The workers' user may not create a topic (an operator does), nor read alerts.
    worker_admin = AdminClient(_sasl(creds, "WORKER"))
    futures = worker_admin.create_topics([NewTopic(f"secure.{uuid.uuid4().hex[:8]}", 1, 1)])
    with pytest.raises(KafkaException) as refused:
        next(iter(futures.values())).result(timeout=15)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    err = _first_error(Consumer(_sasl(creds, "WORKER", **{"group.id": "blink-workers"})), topics["alerts"])
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err


def _cassandra_refusal(**kwargs) -> str:
    """The message of a refused connection to the secured Cassandra (the test fails if it connects)."""
    from cassandra.cluster import Cluster, NoHostAvailable

    cluster = Cluster(["127.0.0.5"], connect_timeout=5, **kwargs)
    try:
        with pytest.raises(NoHostAvailable) as refused:
            cluster.connect()
    finally:
        cluster.shutdown()
    return str(refused.value)


def test_cassandra_refuses_who_it_should(creds):
    import ssl

    from cassandra import Unauthorized
    from cassandra.auth import PlainTextAuthProvider

    worker, password = creds["BLINK_SECURE_CASSANDRA_WORKER_USER"], creds["BLINK_SECURE_CASSANDRA_WORKER_PASSWORD"]
    no_certificate = ssl.create_default_context(cafile=creds["BLINK_SECURE_CA"])
    tls = {"ssl_context": ssl.create_default_context(cafile=creds["BLINK_SECURE_CA"])}
    tls["ssl_context"].load_cert_chain(creds["BLINK_SECURE_CLIENT_CERT"], creds["BLINK_SECURE_CLIENT_KEY"])
    # TLS without a client certificate (the right password), unauthenticated, a wrong password, Cassandra's default
    # superuser, plaintext on the TLS port.
    right_password = PlainTextAuthProvider(worker, password)
    assert "SSL" in _cassandra_refusal(ssl_context=no_certificate, auth_provider=right_password)
    assert "requires authentication" in _cassandra_refusal(**tls)
    assert "AuthenticationFailed" in _cassandra_refusal(
        **tls, auth_provider=PlainTextAuthProvider(worker, uuid.uuid4().hex))
    assert "AuthenticationFailed" in _cassandra_refusal(
        **tls, auth_provider=PlainTextAuthProvider("cassandra", "cassandra"))
    _cassandra_refusal(auth_provider=PlainTextAuthProvider(worker, password))
    # The workers' role reads and writes rows of its keyspace (blink_apdb, made by ops/secure.sh), no more; opened
    # here from an APDB URL (user, password and CA in it).
    apdb = open_apdb(f"cassandra://{worker}:{password}@127.0.0.5/blink_apdb?ssl_ca={creds['BLINK_SECURE_CA']}&"
                     f"ssl_cert={creds['BLINK_SECURE_CLIENT_CERT']}&ssl_key={creds['BLINK_SECURE_CLIENT_KEY']}",
                     max_retries=0)
    try:
        assert apdb.schema_is_current()
        for statement in ('CREATE TABLE blink_apdb."Intruder" (k int PRIMARY KEY)',
                          'DROP TABLE blink_apdb."ApdbMetadata"',
                          "CREATE KEYSPACE intruder WITH replication = {'class': 'SimpleStrategy', "
                          "'replication_factor': 1}",
                          f'GRANT ALL PERMISSIONS ON ALL KEYSPACES TO "{worker}"',
                          "SELECT * FROM system_auth.roles"):
            with pytest.raises(Unauthorized):
                apdb.execute(statement)
    finally:
        apdb.close()
