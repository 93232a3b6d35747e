"""How a worker commits what it consumed: embedded, at-least-once or exactly-once.

* :class:`EmbeddedCommit` (local event files): an exposure's CCDs are processed where its event is read, a
  transient fault is retried in place, and the event file is committed after the message.
* :class:`AtLeastOnceCommit` (Kafka): an exposure is fanned out to work items; a CCD's outputs are produced and
  acknowledged, a transient fault is retried in place, then the offset is committed.
* :class:`ExactlyOnceCommit` (Kafka): a message's outputs (work items, alerts, dead letters) and its offset are
  committed in one transaction; a transient fault aborts it and the whole message is redone in a new one.

The worker (:class:`streamer.worker.loop.Worker`) hands each message to its mode's :meth:`CommitMode.deliver`
with its ``handle`` function; the mode decides what surrounds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from pipeline.errors import TransientError
from streamer.events.records import CcdWork
from streamer.ports import Envelope, EventSource, Transactions

__all__ = ["AtLeastOnceCommit", "CommitMode", "EmbeddedCommit", "ExactlyOnceCommit", "Runner"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Runner(Protocol):
    """What a commit mode needs of the worker that runs it."""

    source: EventSource
    results: list

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        ...

    def retried(self, what: str, call: Callable[[], T]) -> T:
        """``call`` under the worker's retry policy for transient faults (with keepalives)."""
        ...


class CommitMode(Protocol):
    """The worker's commit mode: where an exposure's work goes, how a CCD is retried, when offsets commit."""

    fans_out: bool
    """True: an exposure event is fanned out to work items (:meth:`publish_work`); False: its CCDs are
    processed where the event was consumed."""

    def is_work(self, envelope: Envelope) -> bool:
        """True when ``envelope`` holds one CCD's work item (False: an exposure event)."""
        ...

    def publish_work(self, items: Sequence[CcdWork]) -> None:
        """Send the work items of a fanned-out exposure."""
        ...

    def process(self, what: str, call: Callable[[], T], runner: Runner) -> T:
        """Run one CCD's processing ``call`` (``what`` names it in logs)."""
        ...

    def deliver(self, envelope: Envelope, handle: Callable[[Envelope], bool], runner: Runner) -> None:
        """Handle ``envelope`` (``handle`` returns True when it may be committed) and commit it."""
        ...


class EmbeddedCommit:
    """Local event files: every CCD of an event is processed in line, then the file is committed."""

    fans_out = False

    def is_work(self, envelope: Envelope) -> bool:
        """Always False: a folder holds exposure events only."""
        return False

    def publish_work(self, items: Sequence[CcdWork]) -> None:
        """Not possible: the embedded worker has nowhere to send work.

        Raises
        ------
        RuntimeError
            Always.
        """
        raise RuntimeError("the embedded mode processes an exposure's CCDs where it reads the event")

    def process(self, what: str, call: Callable[[], T], runner: Runner) -> T:
        """Run ``call``, retrying a transient fault in place (nothing is committed before it succeeds)."""
        return runner.retried(what, call)

    def deliver(self, envelope: Envelope, handle: Callable[[Envelope], bool], runner: Runner) -> None:
        """Handle the message, then commit it (retried) when it is done."""
        if handle(envelope):
            runner.retried(f"commit {envelope.where()}", lambda: runner.source.commit(envelope))


class AtLeastOnceCommit(EmbeddedCommit):
    """Kafka, at-least-once: outputs are produced and acknowledged, then the offset is committed.

    Parameters
    ----------
    work_topic : str
        The topic of the work items (the others hold exposure events).
    publish_work : callable
        Produces work items and waits for their acknowledgement (e.g.
        :func:`streamer.kafka.producer.publish_work` bound to the settings).
    """

    fans_out = True

    def __init__(self, work_topic: str, publish_work: Callable[[Sequence[CcdWork]], None]) -> None:
        self.work_topic = work_topic
        self._publish_work = publish_work

    def is_work(self, envelope: Envelope) -> bool:
        """True for a message of the work topic."""
        return envelope.topic is not None and envelope.topic == self.work_topic

    def publish_work(self, items: Sequence[CcdWork]) -> None:
        """Produce the work items and wait for their acknowledgement."""
        self._publish_work(items)


class ExactlyOnceCommit:
    """Kafka, exactly-once: every output of a message and its offset are committed in one transaction.

    Parameters
    ----------
    transactions : Transactions
        The transactional producer (also the worker's alert and dead-letter sink).
    work_topic : str
        The topic of the work items.

    Notes
    -----
    A transient fault aborts the transaction and the whole message is redone in a new one. A message this
    worker already committed (redelivered after a rebalance reset its position), one whose partition is no
    longer assigned, and one whose uncertain commit did commit are skipped.
    """

    fans_out = True

    def __init__(self, transactions: Transactions, work_topic: str) -> None:
        self.transactions = transactions
        self.work_topic = work_topic
        self._next_offset: dict[tuple[str | None, int | None], int] = {}
        """``{(topic, partition): offset after the last message this worker committed}``."""

    def is_work(self, envelope: Envelope) -> bool:
        """True for a message of the work topic."""
        return envelope.topic is not None and envelope.topic == self.work_topic

    def publish_work(self, items: Sequence[CcdWork]) -> None:
        """Produce the work items into the open transaction."""
        self.transactions.publish_work(items)

    def process(self, what: str, call: Callable[[], T], runner: Runner) -> T:
        """Run ``call`` once: a transient fault aborts the transaction, and the message is redone."""
        return call()

    def deliver(self, envelope: Envelope, handle: Callable[[Envelope], bool], runner: Runner) -> None:
        """Handle the message in a transaction, retried as a whole; on a stop, leave it uncommitted."""
        try:
            runner.retried(envelope.where(), lambda: self._in_transaction(envelope, handle, runner))
        except TransientError as err:
            if not runner.stopping:
                raise
            # Not committed: the message is redelivered from the committed offset after a restart.
            log.warning("%s: left uncommitted on stop (%s)", envelope.where(), err)

    def _in_transaction(self, envelope: Envelope, handle: Callable[[Envelope], bool], runner: Runner) -> None:
        """Begin; handle (outputs go into the transaction); commit outputs + offset, or abort."""
        txn = self.transactions
        key = (envelope.topic, envelope.partition)
        if envelope.offset < self._next_offset.get(key, -1):
            log.info("%s: already committed; skipped", envelope.where())
            return
        if not runner.source.owns(envelope):
            log.warning("%s: partition no longer assigned; its new owner redoes the message", envelope.where())
            return
        if txn.was_committed(envelope):
            self._next_offset[key] = envelope.offset + 1
            return
        n_results = len(runner.results)
        txn.begin()
        try:
            done = handle(envelope)
        except BaseException:
            del runner.results[n_results:]
            txn.abort()
            raise
        if not done:
            txn.abort()
            return
        try:
            txn.commit(envelope)
        except BaseException:
            del runner.results[n_results:]
            raise
        self._next_offset[key] = envelope.offset + 1
