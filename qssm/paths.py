"""Checks for the files and directories a user names, made before any work is done: an input that
is a directory, a device or unreadable, and an output directory that cannot be written, are each
one line naming what the path really is."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from qssm.errors import QssmError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))


def kind(mode: int) -> str:
    """What a stat mode is, for messages: "a directory", "a character device", ... or "a file"."""
    return next((name for test, name in _KINDS if test(mode)), "a file")


def shown(path: str | Path) -> str:
    """A path for a one-line message: as typed, or quoted with escapes if it holds a newline or
    another control character."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def stat_path(path: Path, what: str) -> os.stat_result | None:
    """None if the path does not exist; one-line errors for paths that cannot be looked at: a
    control character in it (a pasted newline) and a symlink to nothing are refused here."""
    if not str(path).isprintable():
        raise QssmError(f"{what} {shown(path):.200} has a newline or another control character in it; "
                        f"retype the path")
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            raise QssmError(f"{what} {path} is a symlink to {os.readlink(path)!r:.200}, which does not exist; "
                            f"fix the link or give another path") from None
        return None
    except PermissionError:
        raise QssmError(f"{what} {path} cannot be read (permission denied on a parent directory)") from None
    except (OSError, ValueError) as e:  # ENAMETOOLONG, ELOOP, embedded NUL byte
        raise QssmError(f"{what} {path!s:.200} is not a usable path ({getattr(e, 'strerror', None) or e})") from None


def check_in_file(path: str | Path, what: str, hint: str) -> Path:
    """A regular file this process can read, or a one-line QssmError saying what the path is."""
    if not str(path).strip():
        raise QssmError(f"{what} path is empty; {hint}")
    path = Path(path)
    st = stat_path(path, what)
    if st is None:
        raise QssmError(f"{what} {path} does not exist; {hint}")
    if not stat.S_ISREG(st.st_mode):
        raise QssmError(f"{what} {path} is {kind(st.st_mode)}, not a file; {hint}")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise QssmError(f"{what} {path} cannot be read (permission denied); fix its permissions or copy it") from None
    except OSError as e:
        raise QssmError(f"{what} {path} cannot be read ({e.strerror}); {hint}") from None
    return path


def read_file(path: str | Path, what: str, hint: str) -> bytes:
    path = check_in_file(path, what, hint)
    try:
        return path.read_bytes()
    except OSError as e:
        raise QssmError(f"{what} {path} cannot be read ({e.strerror}); {hint}") from None


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """An output directory that exists and is writable, or can be created under a writable one.
    Creates nothing: the check writes and removes one temporary file in the nearest existing
    directory, so a bad --out fails before any work instead of after it."""
    if not str(path).strip():
        raise QssmError(f"{flag} is empty; give a directory to write into")
    path = Path(path)
    st = stat_path(path, flag)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise QssmError(f"{flag} {path} is {kind(st.st_mode)}, not a directory; give a directory to write into")
    base = path
    while (st := stat_path(base, flag)) is None:
        if base.parent == base:  # even the root (or a deleted working directory) is missing
            raise QssmError(f"{flag} {path}: no existing directory above it; give a directory to write into")
        base = base.parent
    if not stat.S_ISDIR(st.st_mode):
        raise QssmError(f"{flag} {path}: {base} is {kind(st.st_mode)}, not a directory; give a directory to write into")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        raise QssmError(f"{flag} {path}: cannot write in {base} ({e.strerror}); give a writable directory") from None
    return path
