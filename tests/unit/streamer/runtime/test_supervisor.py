"""The ``--workers`` supervisor's command line for each child (streamer.runtime.supervisor)."""

from __future__ import annotations

from streamer.runtime.supervisor import child_argv


def test_child_argv_drops_parent_only_options_and_names_the_worker():
    argv = ["run", "--workers", "3", "--simulate", "--root", "night", "--report", "--worker-id=w",
            "--config", "blink.yaml", "--forever"]
    assert child_argv(argv, "w-1") == ["run", "--root", "night", "--config", "blink.yaml", "--forever",
                                       "--worker-id", "w-1"]


def test_child_argv_handles_equals_forms():
    assert child_argv(["run", "--workers=2", "--worker-id", "a"], "a-0") == ["run", "--worker-id", "a-0"]
