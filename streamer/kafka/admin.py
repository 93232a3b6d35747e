"""Topic administration: Blink's topics, created when missing."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamer.kafka.errors import kafka_error, transient
from streamer.kafka.settings import KafkaSettings

__all__ = ["create_topics"]

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
"""Milliseconds in a day (topic retention is configured in days)."""


def create_topics(settings: KafkaSettings, *, timeout_s: float = 30.0) -> list[str]:
    """Create Blink's topics if they do not exist (idempotent).

    Only the topics missing from the cluster's metadata are asked for: a client without the ``CREATE`` ACL (a
    worker on a secured cluster, :mod:`streamer.kafka.acls`) is refused a creation even of a topic that exists.

    Parameters
    ----------
    settings : KafkaSettings
        Topic names, partitions, replication and retention.
    timeout_s : float, optional
        Time allowed per request.

    Returns
    -------
    list of str
        The topics that were created by this call (empty when all existed).

    Raises
    ------
    TransientError
        The cluster could not be reached or refused to create a topic.
    """
    admin = AdminClient(settings.common_config())
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise transient(exc, "cannot list the topics") from exc
    new = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=settings.replication_factor,
            config={
                "retention.ms": str(int(days * DAY_MS)),
                "max.message.bytes": str(settings.max_message_bytes),
                "compression.type": "producer",
                "min.insync.replicas": str(settings.min_insync_replicas),
            },
        )
        for name, (partitions, days) in settings.topic_specs().items() if name not in existing
    ]
    created: list[str] = []
    if not new:
        return created
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
            log.info("created topic %s", name)
        except KafkaException as exc:
            err = kafka_error(exc)
            if err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                log.debug("topic %s exists", name)
                continue
            raise transient(exc, f"cannot create topic {name}") from exc
    return created
