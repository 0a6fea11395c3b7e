"""The one exception family the CLI turns into a clear message (never a traceback)."""

from __future__ import annotations

import errno
import os


class CosmosError(Exception):
    """A user-facing problem: bad input, bad config, missing artifact. The message says what and where."""


_REASONS = {
    errno.ELOOP: "symlink loop (too many levels of symbolic links)",
    errno.EEXIST: "already exists (a file where a folder is needed, or the reverse)",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError that escaped a command: the path first, then why in plain words.

    Why: a symlink loop, a dangling link or an output path that is a file used to surface as
    ``unexpected error: FileExistsError`` or a raw ``OSError``; the user needs the path and the cause.
    """
    path = exc.filename
    reason = _REASONS.get(exc.errno or -1) or exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.ENOENT and path is not None:
        try:
            if os.path.islink(path):
                reason = f"dangling symlink (points to {os.readlink(path)}, which does not exist)"
            else:
                reason = "no such file or folder"
        except (OSError, TypeError, ValueError):
            reason = "no such file or folder"
    if path is None:
        return reason
    where = os.fsdecode(path) if isinstance(path, (bytes, str, os.PathLike)) else str(path)
    if exc.filename2 is not None:
        where = f"{where} -> {os.fsdecode(exc.filename2)}"
    return f"{where}: {reason}"
