"""The schema registry client against a real Confluent-compatible registry (``ops/registry.sh start``).

The registry is taken from ``BLINK_REGISTRY_URL`` (the Confluent API base, e.g.
``http://127.0.0.1:8081/apis/ccompat/v7``); set, it must answer (in CI a failure, elsewhere a skip).
Unset, the tests use Apicurio on 127.0.0.1:8081 if it answers there, and skip otherwise. Nothing is started.
"""

from __future__ import annotations

import io
import json
import os
import urllib.request
import uuid

import fastavro
import pytest

from pipeline.errors import TransientError
from streamer.alerts.framing import unframe
from streamer.alerts.registry import (
    SchemaRegistryError,
    avro_schema_json,
    import_schema_with_id,
    publish_schema,
    register_schema,
    schema_by_id,
)
from streamer.alerts.schema import AlertSchema, sample_alert
from tests.helpers.servers import unavailable

pytestmark = pytest.mark.integration

DEFAULT_URL = "http://127.0.0.1:8081/apis/ccompat/v7"


def _answers(url: str) -> str | None:
    """None if ``GET {url}/subjects`` answers a JSON list, else why not."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/subjects", timeout=5) as resp:
            if isinstance(json.load(resp), list):
                return None
            return "GET /subjects did not answer a list"
    except Exception as err:  # noqa: BLE001 - anything means "not there"
        return repr(err)


@pytest.fixture(scope="module")
def registry_url() -> str:
    """Base URL of the Confluent-compatible API of a running registry."""
    url = os.environ.get("BLINK_REGISTRY_URL")
    if url:
        why = _answers(url)
        if why:
            unavailable(f"schema registry not reachable at {url} (ops/registry.sh starts one): {why}")
        return url
    why = _answers(DEFAULT_URL)
    if why:
        pytest.skip(f"no schema registry on {DEFAULT_URL} (ops/registry.sh start; or set BLINK_REGISTRY_URL): {why}")
    return DEFAULT_URL


def _unique(prefix: str) -> str:
    """A subject name no other test run used (the registry may outlive one run)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}-value"


def _small_schema() -> dict:
    name = "t" + uuid.uuid4().hex[:12]
    return {"type": "record", "name": name, "namespace": "blink.test",
            "fields": [{"name": "x", "type": "long"}, {"name": "y", "type": ["null", "string"], "default": None}]}


def test_alert_schema_served_under_its_framing_id(registry_url):
    """What a worker does at start-up: the alert schema answers as id 1101 (Rubin 11.1), idempotently, under
    the alerts topic's subject and any other, and reads back as the schema."""
    alert_schema = AlertSchema.latest()
    text = avro_schema_json(alert_schema.definition)
    assert "__fastavro" not in text
    sid = alert_schema.schema_id
    subject = _unique("alerts")
    assert publish_schema(registry_url, subject, alert_schema.definition, sid) == sid
    assert publish_schema(registry_url, subject, text, sid) == sid
    assert publish_schema(registry_url, _unique("alerts-other"), text, sid) == sid
    assert register_schema(registry_url, subject, text) == sid

    answer = schema_by_id(registry_url, sid)
    back = json.loads(answer["schema"])
    assert back == json.loads(text)
    assert answer.get("schemaType", "AVRO") == "AVRO"
    # what a broker does with it: parse it and read an alert framed by Blink
    parsed = fastavro.parse_schema(back)
    assert parsed["name"] == "lsst.v11_1.alert"
    framed = alert_schema.serialize_framed(sample_alert())
    assert unframe(framed)[0] == sid
    decoded = fastavro.schemaless_reader(io.BytesIO(unframe(framed)[1]), parsed)
    assert decoded["diaSourceId"] == sample_alert()["diaSourceId"]


def test_a_different_schema_gets_another_id(registry_url):
    a = register_schema(registry_url, _unique("a"), _small_schema())
    b = register_schema(registry_url, _unique("b"), _small_schema())
    assert a != b
    assert json.loads(schema_by_id(registry_url, b)["schema"])["namespace"] == "blink.test"


def test_unknown_id_and_invalid_schema_are_refused(registry_url):
    with pytest.raises(SchemaRegistryError) as info:
        schema_by_id(registry_url, 2**31 - 7)
    assert info.value.status == 404
    with pytest.raises(SchemaRegistryError) as info:
        register_schema(registry_url, _unique("bad"), '{"type": "record", "name": "x", "fields": "nope"}')
    assert 400 <= info.value.status < 500


def test_unreachable_registry_is_transient():
    with pytest.raises(TransientError, match="unreachable"):
        register_schema("http://127.0.0.1:9/apis/ccompat/v7", "x-value", _small_schema(), timeout=2)
    with pytest.raises(TransientError, match="unreachable"):
        schema_by_id("http://127.0.0.1:9/apis/ccompat/v7", 1, timeout=2)


def test_chosen_id_through_apicurio_import(registry_url):
    if "/apis/ccompat/" not in registry_url:
        pytest.skip("choosing ids needs Apicurio's import API")
    schema = _small_schema()
    subject = _unique("chosen")
    # an id this registry has not given out yet: the next it would give, plus a gap (ids continue above
    # the highest one imported, so a fixed 1101 could be taken already by an earlier run)
    wanted = register_schema(registry_url, _unique("probe"), _small_schema()) + 50
    assert import_schema_with_id(registry_url, subject, schema, wanted) == wanted
    assert import_schema_with_id(registry_url, subject, schema, wanted) == wanted  # idempotent
    assert register_schema(registry_url, subject, schema) == wanted
    assert register_schema(registry_url, _unique("chosen-other"), schema) == wanted
    assert json.loads(schema_by_id(registry_url, wanted)["schema"]) == schema
    assert register_schema(registry_url, _unique("after"), _small_schema()) > wanted
    with pytest.raises(SchemaRegistryError, match="another schema"):
        import_schema_with_id(registry_url, _unique("chosen-clash"), _small_schema(), wanted)


def test_chosen_id_refused_for_a_schema_already_held(registry_url):
    if "/apis/ccompat/" not in registry_url:
        pytest.skip("choosing ids needs Apicurio's import API")
    held = _small_schema()
    held_id = register_schema(registry_url, _unique("held"), held)
    with pytest.raises(SchemaRegistryError, match="already registered under another id"):
        import_schema_with_id(registry_url, _unique("held-again"), held, held_id + 1000)
    assert register_schema(registry_url, _unique("held-third"), held) == held_id
    existing = _unique("existing")
    register_schema(registry_url, existing, _small_schema())
    with pytest.raises(SchemaRegistryError, match="already exists"):
        import_schema_with_id(registry_url, existing, _small_schema(), held_id + 2000)
