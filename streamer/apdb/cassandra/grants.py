"""The permissions of the workers' role on an APDB keyspace (Cassandra's ``CassandraAuthorizer``).

A worker reads and writes rows: ``SELECT`` and ``MODIFY`` (``INSERT``, ``UPDATE``, ``DELETE``, ``TRUNCATE``) on
the keyspace's tables, nothing else: no ``CREATE``, ``ALTER`` or ``DROP`` (``blink apdb init``, run by an
operator's role, creates and upgrades the schema; a worker then runs no schema statement, see
:meth:`~streamer.apdb.cassandra.CassandraApdb.schema_is_current` and
:meth:`~streamer.apdb.cassandra.CassandraApdb.ensure_table`), no other keyspace, no role management.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["WORKER_PERMISSIONS", "grant_worker"]

log = logging.getLogger(__name__)

WORKER_PERMISSIONS = ("SELECT", "MODIFY")
"""What a worker's role may do on its APDB keyspace."""


def grant_worker(apdb: Any, role: str) -> None:
    """Grant ``role`` (an existing role) :data:`WORKER_PERMISSIONS` on ``apdb``'s keyspace; idempotent.

    ``apdb`` (a :class:`~streamer.apdb.cassandra.CassandraApdb`) must be connected as a role that may grant
    them (a superuser, or one with ``AUTHORIZE`` on the keyspace).
    """
    quoted = '"' + role.replace('"', '""') + '"'
    for permission in WORKER_PERMISSIONS:
        apdb.execute(f"GRANT {permission} ON KEYSPACE {apdb.keyspace} TO {quoted}")
    log.info("role %s may %s on keyspace %s", role, " and ".join(WORKER_PERMISSIONS), apdb.keyspace)
