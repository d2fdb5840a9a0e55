"""The files a user names (pairs, archives, config, GPU servers): a printable name for each, and
opening one for reading with a message that names it (missing, a directory, unreadable) instead
of an ``OSError``."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, BinaryIO

from .errors import InputError


def display_name(path: str | os.PathLike) -> str:
    """A file name as text that can be printed and stored: a name that is not UTF-8 (Latin-1
    on an old share) carries undecodable bytes as lone surrogates, which no database takes."""
    return os.fsencode(path).decode("utf-8", "replace")


def open_input(path: str | os.PathLike, what: str) -> BinaryIO:
    """``path`` opened for reading bytes, or an :class:`InputError` saying which ``what``
    (``"pairs file"``, ...) could not be read and why."""
    name = display_name(path)
    if Path(path).is_dir():
        raise InputError(f"{name}: is a directory, expected a {what}")
    try:
        return open(path, "rb")  # the caller closes it
    except FileNotFoundError:
        raise InputError(f"{name}: no such {what}") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read {what}: {exc.strerror}") from None


def read_toml(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A TOML file parsed, or an :class:`InputError` naming it and what is wrong (it cannot be
    read, or it is not TOML, not even UTF-8)."""
    try:
        with open_input(path, what) as handle:
            return tomllib.load(handle)
    except OSError as exc:  # a read error after the open
        raise InputError(f"{display_name(path)}: cannot read {what}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{display_name(path)}: not valid TOML: {exc}") from None
