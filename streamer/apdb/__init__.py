"""APDB stores behind one port (:class:`streamer.apdb.base.Apdb`) and a factory that opens one from a URL."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlparse

from streamer.apdb.base import APDB_SCHEMA_VERSION, HISTORY_DAYS, Apdb, RegionData, SkyRegion

__all__ = ["open_apdb", "Apdb", "RegionData", "SkyRegion", "APDB_SCHEMA_VERSION", "HISTORY_DAYS"]


def open_apdb(url: str, **options: object) -> Apdb:
    """Open an APDB store from a URL.

    Parameters
    ----------
    url : str
        ``sqlite:///relative/or/absolute/path.sqlite`` (``sqlite:////abs/path`` also works),
        ``sqlite:///:memory:``, or ``cassandra://[user:password@]host1,host2[:port]/keyspace[?consistency=ONE&
        replication_factor=3&ssl=1&ssl_ca=/path/ca.pem&ssl_cert=client.pem&ssl_key=client.key&
        blob_codec=none]``.
    **options
        Further keyword arguments of the store's constructor; they override the URL's query.

    Returns
    -------
    Apdb
        The store, not yet initialised: call ``init_schema()`` (creation) or ``check_schema()`` (use).

    Raises
    ------
    ValueError
        Unknown scheme.
    """
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite":
        from streamer.apdb.sqlite_store import SqliteApdb

        path = rest[1:] if rest.startswith("/") else rest
        return SqliteApdb(unquote(path) or ":memory:", **options)  # type: ignore[arg-type]
    if scheme == "cassandra":
        from streamer.apdb.cassandra import CassandraApdb

        parsed = urlparse(url)
        netloc = parsed.netloc.rsplit("@", 1)[-1]
        hostpart, _, port = netloc.rpartition(":") if ":" in netloc.split(",")[-1] else (netloc, "", "")
        kwargs: dict[str, object] = {"hosts": [h for h in hostpart.split(",") if h]}
        if port:
            kwargs["port"] = int(port)
        if parsed.path.strip("/"):
            kwargs["keyspace"] = parsed.path.strip("/")
        if parsed.username:
            kwargs["username"] = unquote(parsed.username)
            kwargs["password"] = unquote(parsed.password or "")
        for key, values in parse_qs(parsed.query).items():
            value = values[-1]
            if key in ("replication_factor", "nside", "time_partition_days"):
                kwargs[key] = int(value)
            elif key in ("connect_timeout_s", "request_timeout_s"):
                kwargs[key] = float(value)
            elif key == "ssl":
                kwargs[key] = value.lower() in ("1", "true", "yes")
            else:
                kwargs[key] = value
        kwargs.update(options)
        return CassandraApdb(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown APDB URL scheme {scheme!r} in {url!r}: expected sqlite:// or cassandra://")
