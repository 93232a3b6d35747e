"""The CCD timing table in the SQLite APDB (the same checks run on Cassandra in tests/integration)."""

from __future__ import annotations

from streamer.apdb.sqlite_store import SqliteApdb
from tests.helpers.timing_log import check_timing_log


def test_timing_log_on_sqlite(tmp_path):
    apdb = SqliteApdb(str(tmp_path / "apdb.sqlite"))
    apdb.init_schema()
    try:
        before = apdb.dump_tables()
        check_timing_log(apdb)
        after = apdb.dump_tables()  # the log is beside the APDB's tables: they are as they were
        assert sorted(after) == sorted(before) and all(len(after[k]) == len(before[k]) for k in before)
    finally:
        apdb.close()
