"""The ``blink run --workers N`` supervisor: N worker processes, each its own consumer of the group.

The parent simulates, creates the APDB and reports once; each child runs ``python -m streamer.cli run`` with
the parent's command line (same ``--config``, flags and environment, hence the same settings) and its own
``--worker-id``. SIGTERM and SIGINT are forwarded to the children, and a child dies with its parent.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

log = logging.getLogger(__name__)

_PARENT_ONLY_FLAGS = ("--simulate", "--report")
"""Flags of ``blink run`` that only the parent acts on."""

_REPLACED_OPTIONS = ("--workers", "--worker-id")
"""Options of ``blink run`` (with a value) that each child gets its own of."""


def child_argv(argv: Sequence[str], worker_id: str) -> list[str]:
    """The command line of one worker process.

    Parameters
    ----------
    argv : sequence of str
        The parent's arguments (without the program name), e.g. ``["run", "--workers", "2", ...]``.
    worker_id : str
        The child's ``--worker-id``.

    Returns
    -------
    list of str
        ``argv`` without ``--workers``, ``--worker-id``, ``--simulate`` and ``--report``, then
        ``--worker-id worker_id``.
    """
    out: list[str] = []
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
            continue
        name = arg.split("=", 1)[0]
        if name in _REPLACED_OPTIONS:
            skip_next = "=" not in arg
            continue
        if name in _PARENT_ONLY_FLAGS:
            continue
        out.append(arg)
    return out + ["--worker-id", worker_id]


def spawn_child(command: list[str]) -> subprocess.Popen:
    """Start a worker process that Linux sends SIGTERM when its parent dies, even by SIGKILL.

    SIGTERM makes a worker finish or hand back its CCD and exit, so no orphan keeps consuming after an
    operator kills the ``--workers`` parent. Elsewhere than Linux the child just starts.

    Parameters
    ----------
    command : list of str
        The child's command line.

    Returns
    -------
    subprocess.Popen
    """
    parent = os.getpid()

    def die_with_parent() -> None:
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(0)

    return subprocess.Popen(command, preexec_fn=die_with_parent if sys.platform == "linux" else None)


def run_workers(argv: Sequence[str], n: int, base_worker_id: str) -> int:
    """Run ``n`` worker processes and wait for them.

    Each runs ``python -m streamer.cli`` with :func:`child_argv` of ``argv`` and the worker id
    ``<base_worker_id>-<k>``. SIGTERM and SIGINT received meanwhile are forwarded to the children.

    Parameters
    ----------
    argv : sequence of str
        The parent's arguments (without the program name).
    n : int
        Number of worker processes.
    base_worker_id : str
        Stem of the children's worker ids.

    Returns
    -------
    int
        The worst exit status (largest in magnitude), 0 when all succeeded.
    """
    procs = [spawn_child([sys.executable, "-m", "streamer.cli", *child_argv(argv, f"{base_worker_id}-{k}")])
             for k in range(n)]
    log.info("started %d workers: %s", n, ", ".join(str(p.pid) for p in procs))

    def forward(signum, _frame):
        log.info("forwarding signal %d to the workers", signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    for p, code in zip(procs, codes):
        if code != 0:
            log.error("worker pid %d exited with status %d", p.pid, code)
    return max(codes, key=abs) if any(codes) else 0
