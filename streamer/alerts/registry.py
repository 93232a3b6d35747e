"""A small client for a Confluent-compatible schema registry (stdlib only).

Blink frames every alert with the Confluent wire format (:func:`streamer.alerts.framing.frame`): a zero byte, then a
4-byte schema id. A consumer resolves that id with a schema registry; this module registers Blink's schemas
there and reads them back. It speaks the Confluent Schema Registry REST API, which Apicurio Registry serves
under ``/apis/ccompat/v7`` (``ops/registry.sh`` runs one on 127.0.0.1:8081), so ``url`` is that base, e.g.
``http://127.0.0.1:8081/apis/ccompat/v7`` (for Confluent's own server: ``http://host:8081``).

Registering is idempotent: the same schema text under the same subject always answers the same id.

Ids are chosen by the registry. Rubin's convention is that the id *is* the schema version (11.1 -> 1101), and
the Confluent API has no way to ask for an id on Apicurio (``PUT /mode`` answers "Operation not supported",
an ``"id"`` in the registration body is ignored). :func:`import_schema_with_id` gets a chosen id through
Apicurio's own import API instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping
from typing import Any

from pipeline.errors import BlinkError, TransientError

__all__ = [
    "SchemaRegistryError",
    "avro_schema_json",
    "import_schema_with_id",
    "publish_schema",
    "register_schema",
    "schema_by_id",
]

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_ACCEPT = "application/vnd.schemaregistry.v1+json, application/json"
_STAGE = "schema_registry"


class SchemaRegistryError(BlinkError):
    """The schema registry answered, and refused: an invalid or incompatible schema, an unknown id or subject.

    Parameters
    ----------
    message : str
        What went wrong, with the registry's own message.
    status : int, optional
        HTTP status of the answer (0 when the answer itself was unusable).
    error_code : int, optional
        The registry's ``error_code`` (Confluent: 40401 subject not found, 40403 schema not found, 42201
        invalid schema, 409 incompatible...), 0 if it gave none.
    """

    reason = "schema_registry"

    def __init__(self, message: str, *, status: int = 0, error_code: int = 0) -> None:
        super().__init__(message, stage=_STAGE)
        self.status = status
        self.error_code = error_code


def _strip_parser_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_parser_keys(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        return [_strip_parser_keys(v) for v in value]
    return value


def avro_schema_json(schema: str | Mapping[str, Any]) -> str:
    """Return the JSON text of an Avro schema, as a registry stores it.

    Parameters
    ----------
    schema : str or mapping
        JSON text (returned as is), or a definition such as ``AlertSchema.latest().definition``. fastavro's
        parsed definitions carry private keys (``__fastavro_parsed``, ``__named_schemas``); they are dropped.

    Returns
    -------
    str
        The schema as JSON text, with sorted keys: the parser builds its dicts in an order that changes with
        Python's hash seed, and a registry identifies a schema by its exact text.
    """
    if isinstance(schema, str):
        return schema
    return json.dumps(_strip_parser_keys(schema), sort_keys=True)


def _request(method: str, url: str, *, body: bytes | None = None, content_type: str = _CONTENT_TYPE,
             timeout: float = 10.0, raw_answer: bool = False) -> Any:
    """Send one request; return the decoded JSON answer (None for an empty one), or its bytes if raw_answer."""
    headers = {"Accept": "*/*" if raw_answer else _ACCEPT}
    if body is not None:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        message = answer.get("message") or raw[:200].decode("utf-8", "replace") or exc.reason
        error_code = int(answer.get("error_code") or 0)
        text = f"{method} {url}: HTTP {exc.code}: {message}"
        if exc.code >= 500 or exc.code in (408, 429):
            raise TransientError(f"schema registry: {text}", stage=_STAGE) from exc
        raise SchemaRegistryError(text, status=exc.code, error_code=error_code) from exc
    except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
        why = getattr(exc, "reason", exc)
        raise TransientError(f"schema registry unreachable: {method} {url}: {why}", stage=_STAGE) from exc
    if raw_answer:
        return raw
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise SchemaRegistryError(f"{method} {url}: answer is not JSON: {raw[:200]!r}") from exc


def register_schema(url: str, subject: str, schema_json: str | Mapping[str, Any], *,
                    schema_type: str = "AVRO", timeout: float = 10.0) -> int:
    """Register a schema under a subject (``POST /subjects/{subject}/versions``) and return its id.

    Idempotent: registering the same schema again, under this or another subject, answers the same id.

    Parameters
    ----------
    url : str
        Base of the Confluent-compatible API, e.g. ``http://127.0.0.1:8081/apis/ccompat/v7``.
    subject : str
        Subject name; by Confluent's TopicNameStrategy ``"<topic>-value"``.
    schema_json : str or mapping
        The schema: JSON text, or a definition (see :func:`avro_schema_json`).
    schema_type : str, optional
        ``"AVRO"`` (default), ``"JSON"`` or ``"PROTOBUF"``.
    timeout : float, optional
        Seconds to wait for the answer.

    Returns
    -------
    int
        The schema id, the one to put in the wire-format header.

    Raises
    ------
    TransientError
        The registry is unreachable, timed out or failed (HTTP 5xx): a retry may cure it.
    SchemaRegistryError
        The registry refused the schema (invalid, or incompatible with the subject's earlier versions).
    """
    if not subject:
        raise ValueError("subject must not be empty")
    body = json.dumps({"schema": avro_schema_json(schema_json), "schemaType": schema_type}).encode()
    target = f"{url.rstrip('/')}/subjects/{urllib.parse.quote(subject, safe='')}/versions"
    answer = _request("POST", target, body=body, timeout=timeout)
    if not isinstance(answer, dict) or not isinstance(answer.get("id"), int):
        raise SchemaRegistryError(f"POST {target}: unexpected answer {answer!r}")
    return answer["id"]


def schema_by_id(url: str, schema_id: int, *, timeout: float = 10.0) -> dict[str, Any]:
    """Fetch a schema by id (``GET /schemas/ids/{id}``).

    Parameters
    ----------
    url : str
        Base of the Confluent-compatible API, e.g. ``http://127.0.0.1:8081/apis/ccompat/v7``.
    schema_id : int
        Id from :func:`register_schema` or from a message's wire-format header.
    timeout : float, optional
        Seconds to wait for the answer.

    Returns
    -------
    dict
        The registry's answer: ``"schema"`` holds the schema's JSON text (``json.loads`` it for
        ``fastavro.parse_schema``); ``"schemaType"`` and ``"references"`` may be present too.

    Raises
    ------
    TransientError
        The registry is unreachable, timed out or failed (HTTP 5xx).
    SchemaRegistryError
        No schema has this id (HTTP 404, ``error_code`` 40403), or the answer has no schema.
    """
    target = f"{url.rstrip('/')}/schemas/ids/{int(schema_id)}"
    answer = _request("GET", target, timeout=timeout)
    if not isinstance(answer, dict) or not isinstance(answer.get("schema"), str):
        raise SchemaRegistryError(f"GET {target}: unexpected answer {answer!r}")
    return answer


def _found(method: str, url: str, timeout: float) -> bool:
    """True if the request succeeds, False on HTTP 404."""
    try:
        _request(method, url, timeout=timeout, raw_answer=True)
    except SchemaRegistryError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _apicurio_root(url: str) -> str:
    parts = url.rstrip("/").split("/apis/ccompat/", 1)
    if len(parts) != 2:
        raise ValueError(f"{url!r} is not an Apicurio ccompat URL (expected .../apis/ccompat/v7)")
    return parts[0]


def import_schema_with_id(url: str, subject: str, schema_json: str | Mapping[str, Any], schema_id: int, *,
                          schema_type: str = "AVRO", timeout: float = 30.0) -> int:
    """Register a schema under a chosen id (Apicurio Registry only), e.g. 1101 for Rubin's alert schema 11.1.

    The Confluent API cannot choose ids on Apicurio; this uses Apicurio's import API
    (``POST /apis/registry/v2/admin/import`` with a one-schema export archive), which keeps the archive's
    content id, the id the Confluent API answers. It must come first: a text the registry already holds
    keeps the id it has (refused here), and the subject must be new. The result is checked through the
    Confluent API, after which :func:`register_schema` of the same text answers ``schema_id`` under any
    subject. Ids the registry assigns afterwards continue above the highest one imported (1101 -> 1102...).
    The registry keeps the id only as long as its storage: ``ops/registry.sh`` runs it in memory, so import
    again after each start.

    Parameters
    ----------
    url : str
        Base of Apicurio's Confluent-compatible API, e.g. ``http://127.0.0.1:8081/apis/ccompat/v7``.
    subject : str
        Subject name (the import makes it version 1 of that subject).
    schema_json : str or mapping
        The schema (see :func:`avro_schema_json`).
    schema_id : int
        The id wanted, 1 .. 2**31 - 1; also used as Apicurio's global id of the version.
    schema_type : str, optional
        ``"AVRO"`` (default), ``"JSON"`` or ``"PROTOBUF"``.
    timeout : float, optional
        Seconds to wait for each answer.

    Returns
    -------
    int
        ``schema_id``. Idempotent: importing the same schema with the same id again does nothing.

    Raises
    ------
    TransientError
        The registry is unreachable, timed out or failed (HTTP 5xx).
    SchemaRegistryError
        The id holds another schema, the schema is already registered under another id, or the subject
        already exists.
    ValueError
        ``url`` is not an Apicurio ccompat URL, or the id is out of range.
    """
    if not 0 < schema_id < 2**31:
        raise ValueError(f"schema id {schema_id} out of range 1 .. 2**31 - 1")
    root = _apicurio_root(url)
    text = avro_schema_json(schema_json)
    try:
        existing = schema_by_id(url, schema_id, timeout=timeout)
    except SchemaRegistryError as exc:
        if exc.status != 404:
            raise
        existing = None
    if existing is not None and existing["schema"] != text:
        raise SchemaRegistryError(f"schema id {schema_id} already holds another schema", status=409)
    if existing is None:
        data = text.encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        # Apicurio keeps one copy of each text: one it already holds would keep its id (or leave a broken
        # import behind), so refuse; and the import writes version 1 of the subject, so it must be new.
        if _found("GET", f"{root}/apis/registry/v2/ids/contentHashes/{digest}/", timeout):
            raise SchemaRegistryError(
                f"the schema is already registered under another id than {schema_id}; a chosen id must be "
                "imported before anything registers the same schema text", status=409)
        subject_url = f"{url.rstrip('/')}/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        if _found("GET", subject_url, timeout):
            raise SchemaRegistryError(f"subject {subject!r} already exists; importing a chosen id needs a new one",
                                      status=409)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("manifest.Manifest.json", json.dumps({"systemName": "blink", "exportVersion": "1.0"}))
            zf.writestr(f"content/{digest}.Content.json", json.dumps({
                "contentId": schema_id, "canonicalHash": digest, "contentHash": digest,
                "artifactType": schema_type, "serializedReferences": None}))
            zf.writestr(f"content/{digest}.Content.data", data)
            zf.writestr(f"groups/default/artifacts/{subject}/versions/1.ArtifactVersion.json", json.dumps({
                "globalId": schema_id, "groupId": None, "artifactId": subject, "version": "1", "versionId": 1,
                "artifactType": schema_type, "state": "ENABLED", "name": None, "description": None,
                "createdBy": "", "createdOn": 0, "labels": None, "properties": None, "isLatest": True,
                "contentId": schema_id}))
        _request("POST", f"{root}/apis/registry/v2/admin/import", body=archive.getvalue(),
                 content_type="application/zip", timeout=timeout)
    got = register_schema(url, subject, text, schema_type=schema_type, timeout=timeout)
    if got != schema_id:
        raise SchemaRegistryError(
            f"subject {subject!r}: the schema has id {got}, not {schema_id} (was it registered before the import?)",
            status=409)
    return schema_id


def publish_schema(url: str, subject: str, schema_json: str | Mapping[str, Any], schema_id: int, *,
                   timeout: float = 30.0) -> int:
    """Make the registry serve a schema under the id messages are framed with (alerts: 1101 for 11.1).

    On Apicurio (a ``/apis/ccompat/`` URL) the id is imported (:func:`import_schema_with_id`); any other
    registry must already hand out that id (a Confluent registry in IMPORT mode, with the schema registered
    under it), which is checked.

    Returns
    -------
    int
        ``schema_id``.

    Raises
    ------
    TransientError
        The registry is unreachable or failing.
    SchemaRegistryError
        The registry serves the schema under another id, or refuses it.
    """
    if "/apis/ccompat/" in url:
        return import_schema_with_id(url, subject, schema_json, schema_id, timeout=timeout)
    got = register_schema(url, subject, schema_json, timeout=timeout)
    if got != schema_id:
        raise SchemaRegistryError(f"the registry serves subject {subject!r} as id {got}, but messages are framed "
                                  f"with {schema_id}: register it under that id first (IMPORT mode)", status=409)
    return got
