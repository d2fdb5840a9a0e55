"""The files a user names (pairs, archives, config, GPU servers, every output): a printable name
for each; opening one for reading with a message that names it (missing, a directory,
unreadable) instead of an ``OSError``; and the one way every output is written (:func:`writing`,
:func:`open_output`): a regular file whole or not at all, a FIFO or device in place, never
replaced."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from .errors import InputError


def display_name(path: str | os.PathLike[str]) -> str:
    """A file name as text that can be printed and stored: a name that is not UTF-8 (Latin-1
    on an old share) carries undecodable bytes as lone surrogates, which no database takes."""
    return os.fsencode(path).decode("utf-8", "replace")


def open_input(path: str | os.PathLike[str], what: str) -> BinaryIO:
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


def read_toml(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A TOML file parsed, or an :class:`InputError` naming it and what is wrong (it cannot be
    read, or it is not TOML, not even UTF-8)."""
    try:
        with open_input(path, what) as handle:
            return tomllib.load(handle)
    except OSError as exc:  # a read error after the open
        raise InputError(f"{display_name(path)}: cannot read {what}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{display_name(path)}: not valid TOML: {exc}") from None


# A path that names an open file descriptor (/dev/stdout, /dev/fd/N, /proc/PID/fd/N): the
# stream the command was given, whatever it leads to.
_DESCRIPTOR_DIR = re.compile(r"/proc/[^/]+/fd")
# Symlinks followed at most, as the kernel does (MAXSYMLINKS), before giving up on a path.
_MAX_SYMLINKS = 40


def _descriptor(path: str) -> tuple[bool, int | None]:
    """Whether ``path``, or a symlink on its way, is a descriptor's name under /proc/*/fd
    (``/dev/stdout`` links to ``/proc/self/fd/1``, which links to whatever fd 1 is), and the
    descriptor's number when it is one of this process's."""
    current = os.path.abspath(path)
    for _ in range(_MAX_SYMLINKS):
        directory = os.path.realpath(os.path.dirname(current))
        if _DESCRIPTOR_DIR.fullmatch(directory):
            number = os.path.basename(current)
            own = directory == f"/proc/{os.getpid()}/fd" and number.isdigit()
            return True, int(number) if own else None
        if not os.path.islink(current):
            return False, None
        current = os.path.join(os.path.dirname(current), os.readlink(current))
    return False, None


def _open_in_place(path: str | os.PathLike[str], binary: bool) -> IO[Any]:
    """An output opened where it is. One of our own descriptors (``/dev/stdout``) is
    duplicated, so the output shares its offset with what the process writes there (reopening
    it, as Linux does for /proc/self/fd/N, would write over that); anything else is opened to
    append, so that it never truncates what it does not own."""
    _, own = _descriptor(os.fspath(path))
    fd = os.dup(own) if own is not None else os.open(path, os.O_WRONLY | os.O_APPEND)
    if binary:
        return open(fd, "wb")
    return open(fd, "w", newline="", encoding="utf-8")


def written_in_place(path: str | os.PathLike[str], label: str = "") -> bool:
    """How an output path is written: True in place (it exists and is not a regular file: a
    FIFO, a character device such as /dev/null, a terminal, or it names a descriptor such as
    /dev/stdout; see :func:`_open_in_place`), False aside and renamed over its target
    (missing, or a regular file, also through a symlink, which stays). A directory, a block
    device or a socket is refused: a report or pairs file written over a disk would destroy
    it."""
    name = display_name(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False  # created (through a dangling symlink, at its target, as a shell does)
    except OSError as exc:
        raise InputError(f"{label}{name}: cannot write: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{label}{name}: is a directory, expected a file to write")
    if stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        kind = "a block device" if stat.S_ISBLK(mode) else "a socket"
        raise InputError(
            f"{label}{name}: is {kind}; nsml-etl writes regular files, FIFOs and character "
            "devices (such as /dev/stdout) only"
        )
    return not stat.S_ISREG(mode) or _descriptor(os.fspath(path))[0]


def open_output(path: str | os.PathLike[str], what: str = "") -> IO[bytes]:
    """``path`` opened for writing bytes in place, for a file written as it goes (the raw
    archive: what was written before a crash can be replayed), or an :class:`InputError`
    naming ``what`` (an option, such as ``"--save-raw"``) and the path. Refuses what
    :func:`written_in_place` refuses; the caller closes the handle."""
    label = f"{what} " if what else ""
    try:
        if written_in_place(path, label):
            return _open_in_place(path, binary=True)
        return open(path, "wb")
    except OSError as exc:
        raise InputError(f"{label}{display_name(path)}: cannot write: {exc.strerror}") from None


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], what: str = "") -> Iterator[IO[str]]:
    """A text handle (UTF-8, newlines as written) for the whole content of output ``path``.

    A regular or missing file appears whole or not at all: written aside in its folder and
    renamed over it when the block ends without an error (so an interrupted write never leaves
    half a pairs file for the next cron run); through a symlink, its target is replaced and the
    link stays; an existing file keeps its permissions. Anything else that exists (a FIFO,
    /dev/null, /dev/stdout) is written in place, as a shell's ``>`` would, never replaced.
    An ``OSError`` while opening, writing or renaming is an :class:`InputError` naming
    ``what`` (an option, such as ``"--html"``) and the path."""
    label = f"{what} " if what else ""
    name = display_name(path)
    if written_in_place(path, label):
        try:
            with _open_in_place(path, binary=False) as handle:
                yield handle
        except OSError as exc:
            raise InputError(f"{label}{name}: cannot write: {exc.strerror or exc}") from None
        return
    target = Path(os.path.realpath(path))
    aside = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(aside, "w", newline="", encoding="utf-8") as handle:
            yield handle
        with contextlib.suppress(FileNotFoundError):
            shutil.copymode(target, aside)
        os.replace(aside, target)
    except OSError as exc:
        raise InputError(f"{label}{name}: cannot write: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            aside.unlink(missing_ok=True)


def standard_input(what: str) -> BinaryIO:
    """Standard input as bytes, for ``-``; an :class:`InputError` when it is closed (a
    process started with ``<&-`` has no ``sys.stdin`` at all), naming the ``what`` expected."""
    if sys.stdin is None or getattr(sys.stdin, "buffer", None) is None:
        raise InputError(
            f"-: standard input is closed; pipe the {what} in, or give its path instead of -"
        )
    return sys.stdin.buffer
