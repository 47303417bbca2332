"""Reading input files with a bound: policy files, manifests, suites, requests.

A file podgate reads may be hostile or a mistake: ``/dev/zero``, a FIFO nobody writes to, a
symlink to a device, gigabytes of YAML. Every read here stops one byte past its limit, and a
reader that asks for regular files only (the policy directory a server watches) never opens
anything else, and never waits on a FIFO (it is opened non-blocking, then checked).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO

from .errors import PodgateError

MiB = 1024 * 1024
# A policy file is a few kB (a ConfigMap holds at most 1 MiB in all), and parsing YAML costs a
# few seconds per MiB of one core, in every worker, at each change: more is a mistake or an attack.
POLICY_FILE_MAX = MiB // 4
# Manifests, suites, namespace labels: many objects per file (the output of helm template), but
# not without end; the API server's own limit is 3 MiB per request.
INPUT_FILE_MAX = 32 * MiB
_CHUNK = 1 * MiB

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class InputFileError(PodgateError):
    """A file cannot be read, or not within its bound; the message is the reason, without the path."""


def size_text(limit: int) -> str:
    if limit % MiB == 0:
        return f"{limit // MiB} MiB"
    return f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _read_all(stream: BinaryIO | int, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = os.read(stream, min(_CHUNK, limit + 1 - total)) if isinstance(stream, int) \
            else stream.read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    raise InputFileError(f"larger than {size_text(limit)}, the most podgate reads of such a file")


def read_bytes(path: str | Path, limit: int, *, regular_only: bool = False) -> bytes:
    """At most ``limit`` bytes of a file (``-``: stdin); more is an error, not a truncation.

    ``regular_only``: refuse FIFOs, devices and sockets (also behind a symlink) without reading
    them. Otherwise a pipe is read like a file (``<(...)`` on the command line), bounded."""
    if str(path) == "-":
        stdin = getattr(sys.stdin, "buffer", None)
        if stdin is None:  # a text stream put in place of stdin (an embedding program, a test)
            text = sys.stdin.read(limit + 1)
            data = text.encode()
            if len(text) > limit or len(data) > limit:
                raise InputFileError(f"larger than {size_text(limit)}, the most podgate reads of such a file")
            return data
        return _read_all(stdin, limit)
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode) or (regular_only and not stat.S_ISREG(mode)):
            raise InputFileError(f"not a regular file ({file_kind(mode)})")
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it may have replaced the file
        # since the stat); fstat says what was opened.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputFileError(exc.strerror or str(exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            if regular_only or stat.S_ISDIR(mode):
                raise InputFileError(f"not a regular file ({file_kind(mode)})")
            os.set_blocking(fd, True)
        return _read_all(fd, limit)
    except OSError as exc:
        raise InputFileError(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def read_text(path: str | Path, limit: int, *, regular_only: bool = False) -> str:
    """``read_bytes`` decoded as UTF-8."""
    data = read_bytes(path, limit, regular_only=regular_only)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
