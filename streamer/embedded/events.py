"""Event files in a folder as an event source (no servers): the embedded default.

:class:`LocalEventSource` reads event files (``*.avro``, one ``exposureReady`` each, see
:mod:`streamer.events.files`) from a folder in name order and remembers committed ones in ``.committed``, so
a restart does not redo committed work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import InputError
from streamer.ports import Envelope

__all__ = ["COMMITTED_FILE", "LocalEventSource"]

log = logging.getLogger(__name__)

COMMITTED_FILE = ".committed"
"""Name of the file, in the source's state folder, that lists the committed event files."""


class LocalEventSource:
    """Event files in a folder, in name order, each delivered until committed.

    Parameters
    ----------
    folder : path-like
        Folder holding ``*.avro`` event files (see :func:`streamer.events.files.write_event_file`).
    state_dir : path-like, optional
        Where ``.committed`` is kept (default: ``folder``).

    Notes
    -----
    ``poll`` re-lists the folder, so files that appear later are picked up (a watched drop folder). The value
    of each envelope is the file's bytes; :func:`streamer.events.records.decode_event` decodes them, and a
    corrupt file goes through the normal error path rather than breaking the source. The Kafka-only calls of
    the port are no-ops (:meth:`keepalive`), constant (:meth:`owns`, :meth:`lag`), or immediate
    (:meth:`defer` hands a file back for the next poll).
    """

    def __init__(self, folder: str | os.PathLike[str], *, state_dir: str | os.PathLike[str] | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"event folder {str(self.folder)!r} does not exist", stage="read_events")
        self.state_dir = Path(state_dir) if state_dir is not None else self.folder
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.state_dir / COMMITTED_FILE
        self._committed: set[str] = set()
        if self.state_path.exists():
            self._committed = {ln.strip() for ln in self.state_path.read_text().splitlines() if ln.strip()}
        self._delivered: set[str] = set()
        self._closed = False

    @property
    def committed(self) -> frozenset[str]:
        """Names of the committed event files."""
        return frozenset(self._committed)

    def pending(self) -> list[Path]:
        """Event files neither committed nor delivered in this session, in name order."""
        return [
            p
            for p in sorted(self.folder.glob("*.avro"))
            if p.is_file() and p.name not in self._committed and p.name not in self._delivered
        ]

    def poll(self, timeout_s: float = 1.0) -> Envelope | None:
        """Return the next event file as an envelope, or ``None`` when there is none (does not wait).

        Parameters
        ----------
        timeout_s : float, optional
            Ignored (kept for the :class:`~streamer.ports.EventSource` protocol).
        """
        if self._closed:
            return None
        for path in self.pending():
            try:
                value = path.read_bytes()
            except OSError as exc:  # vanished or unreadable: try again on a later poll
                log.warning("cannot read event file %s: %s", path, exc)
                continue
            self._delivered.add(path.name)
            return Envelope(value=value, key=path.stem.encode(), path=path)
        return None

    def __iter__(self) -> Iterator[Envelope]:
        """Yield every pending event file, then stop."""
        while (env := self.poll(0.0)) is not None:
            yield env

    def commit(self, envelope: Envelope) -> None:
        """Record the envelope's file as done (appended to ``.committed`` and fsynced)."""
        if envelope.path is None:
            raise ValueError("envelope has no path; not from a LocalEventSource")
        name = envelope.path.name
        if name in self._committed:
            return
        with open(self.state_path, "a") as fo:
            fo.write(name + "\n")
            fo.flush()
            os.fsync(fo.fileno())
        self._committed.add(name)

    def defer(self, envelope: Envelope, delay_s: float = 0.5) -> None:
        """Hand the envelope's file back uncommitted: the next :meth:`poll` may deliver it again.

        Parameters
        ----------
        envelope : Envelope
            An envelope of this source.
        delay_s : float, optional
            Ignored (a folder has no partition to pause).
        """
        if envelope.path is not None:
            self._delivered.discard(envelope.path.name)

    @property
    def has_deferred(self) -> bool:
        """Always False: a deferred file is pending again at once."""
        return False

    def owns(self, envelope: Envelope) -> bool:
        """Always True: no other consumer shares the folder."""
        return True

    def keepalive(self) -> None:
        """Nothing to keep alive."""

    def lag(self) -> dict[tuple[str, int], int]:
        """Always empty: a folder has no partitions (:meth:`pending` lists the files still to do)."""
        return {}

    def close(self) -> None:
        """Stop delivering; nothing else to release."""
        self._closed = True
