"""Passwords read from files (a mounted Kubernetes or Docker secret, a 0600 file): the ``*_password_file``
settings, so that a password need not sit in an environment variable, where ``/proc/<pid>/environ`` shows it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["password_from_file"]


def password_from_file(data: Any, password_key: str, file_key: str) -> Any:
    """Settings input with ``password_key`` set from the file named by ``file_key``, when only the file is given.

    Parameters
    ----------
    data : Any
        The settings' raw input (a mapping of field names to values, from flags, environment and files).
    password_key, file_key : str
        The password's field and the field naming its file.

    Returns
    -------
    Any
        ``data``, with the password read from the file (its trailing newline dropped) when the file is given
        and the password is not.

    Raises
    ------
    ValueError
        The file cannot be read or is empty (the message names the setting and the path, never the content).
    """
    if not isinstance(data, Mapping) or not data.get(file_key) or data.get(password_key):
        return data
    path = Path(data[file_key])
    try:
        secret = path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{file_key}: cannot read {path}: {exc.strerror or exc}") from None
    if not secret:
        raise ValueError(f"{file_key}: {path} is empty")
    return {**data, password_key: secret}
