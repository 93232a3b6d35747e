"""Kafka ACLs of Blink's two kinds of users, as Rubin's alert stream grants them (StandardAuthorizer).

================  ===============================================================================
user              may
================  ===============================================================================
workers           read events; read and write work (the fan-out); write alerts and dead letters;
                  read (join, commit in) its consumer group; use its transactional ids
                  (``<group_id>.<worker_id>``, :func:`streamer.kafka.transactions.transactional_id`)
alert broker      read the alert topic, in consumer groups whose names start with its user name
================  ===============================================================================

Nothing else: no topic creation (an operator's ``blink topics create`` does it), no other topic, no other
group. ``READ`` and ``WRITE`` imply ``DESCRIBE``; ``WRITE`` on a topic implies idempotent production (KIP-679).
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from streamer.kafka.errors import transient
from streamer.kafka.settings import KafkaSettings

__all__ = ["alert_reader_acls", "configured_acls", "create_acls", "worker_acls"]

log = logging.getLogger(__name__)


def _allow(kind: ResourceType, name: str, user: str, operation: AclOperation,
           pattern: ResourcePatternType = ResourcePatternType.LITERAL) -> AclBinding:
    return AclBinding(kind, name, pattern, f"User:{user}", "*", operation, AclPermissionType.ALLOW)


def worker_acls(settings: KafkaSettings, user: str) -> list[AclBinding]:
    """The ACLs of the workers' user on ``settings``' topics, group and transactional ids."""
    topic, read, write = ResourceType.TOPIC, AclOperation.READ, AclOperation.WRITE
    return [_allow(topic, settings.events_topic, user, read),
            _allow(topic, settings.work_topic, user, read),
            _allow(topic, settings.work_topic, user, write),
            _allow(topic, settings.alerts_topic, user, write),
            _allow(topic, settings.dead_letter_topic, user, write),
            _allow(ResourceType.GROUP, settings.group_id, user, read),
            _allow(ResourceType.TRANSACTIONAL_ID, f"{settings.group_id}.", user, write,
                   ResourcePatternType.PREFIXED)]


def alert_reader_acls(settings: KafkaSettings, user: str) -> list[AclBinding]:
    """The ACLs of an alert broker's user: read the alert topic, with groups prefixed by the user name."""
    return [_allow(ResourceType.TOPIC, settings.alerts_topic, user, AclOperation.READ),
            _allow(ResourceType.GROUP, user, user, AclOperation.READ, ResourcePatternType.PREFIXED)]


def configured_acls(settings: KafkaSettings) -> list[AclBinding]:
    """The ACLs that ``settings.acl_worker_user`` and ``settings.acl_alert_reader_users`` ask for."""
    bindings = worker_acls(settings, settings.acl_worker_user) if settings.acl_worker_user else []
    for user in settings.acl_alert_reader_users:
        bindings += alert_reader_acls(settings, user)
    return bindings


def create_acls(settings: KafkaSettings, bindings: list[AclBinding], *, timeout_s: float = 30.0) -> int:
    """Create ``bindings`` (idempotent: an existing ACL is left as it is) as ``settings``' user, who needs
    ``ALTER`` on the cluster (a super user). Returns how many were asked for.

    Raises
    ------
    TransientError
        The cluster could not be reached or refused an ACL.
    """
    if not bindings:
        return 0
    admin = AdminClient(settings.common_config())
    for binding, future in admin.create_acls(bindings, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            raise transient(exc, f"cannot create the ACL {binding}") from exc
    log.info("%d ACLs in place", len(bindings))
    return len(bindings)
