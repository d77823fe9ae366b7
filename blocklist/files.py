"""Durable file replacement: what the publisher and the sync client write must survive a crash.

A new file is written under a temporary name in the same directory, fsynced, renamed over the
old one, and the directory is fsynced so the rename itself is durable. A crash at any moment
leaves either the old file or the new one, never a mix. Named crash checkpoints let SIGKILL tests
stop the process between the steps.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from blocklist.crash import checkpoint
from blocklist.errors import ArtefactError


def fsync_dir(directory: Path) -> None:
    # Some filesystems cannot fsync a directory; the rename is then as durable as they allow.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_stored(path: Path) -> bytes | None:
    """A file `write_atomic` keeps: its bytes, None when there is none; ArtefactError when it
    exists but cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ArtefactError("unreadable", f"cannot read {path}: {exc}") from None


@contextlib.contextmanager
def replacing(
    path: Path, permissions: int | None = None, label: str = "", **open_args: Any
) -> Iterator[IO]:
    """A file that replaces `path` when the block ends without an exception (fsynced, then
    renamed, then the directory fsynced); otherwise nothing is left behind. Explicit `permissions`
    are set exactly, whatever the umask (group readers such as the resolver and the stop page
    must be able to read a 0640 list under umask 077); without one, 0644 less the umask.
    `open_args` go to `open` (default: binary, unbuffered).

    Crash checkpoints: `<label>.tmp` when the temporary file is complete, `<label>` once the
    rename is durable.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    initial = 0o644 if permissions is None else permissions
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, initial)
    try:
        with open(fd, **({"mode": "wb", "buffering": 0} | open_args)) as f:
            if permissions is not None:
                os.fchmod(fd, permissions)
            yield f
            f.flush()
            os.fsync(fd)
        if label:
            checkpoint(f"{label}.tmp")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    if label:
        checkpoint(label)


def write_atomic(
    path: Path, data: bytes | Sequence[bytes], label: str = "", mode: int | None = None
) -> None:
    """Replace `path` with `data` (one buffer or several, written in order); see `replacing`.
    One more crash checkpoint: `<label>.partial` after the first of several buffers."""
    chunks = [data] if isinstance(data, bytes | bytearray | memoryview) else list(data)
    with replacing(path, mode, label) as f:
        for i, chunk in enumerate(chunks):
            view = memoryview(chunk)
            while view:
                view = view[f.write(view) :]
            if i == 0 and len(chunks) > 1 and label:
                checkpoint(f"{label}.partial")
