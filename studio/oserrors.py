"""Operating-system failures (disk full, read-only workspace, a directory where a file should be,
I/O errors) worded for the user: what failed, on which path, and what to do about it.

One place for the advice, so the CLI, the uploads, the run store and the pages say the same thing.

    >>> import errno
    >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device"), "save the upload", "/w")
    'cannot save the upload in /w: the disk is full (No space left on device); free some disk space and try again'
"""

from __future__ import annotations

import errno
import os

_ADVICE = {
    errno.ENOSPC: ("the disk is full", "free some disk space and try again"),
    errno.EDQUOT: ("the disk quota is used up", "free some disk space and try again"),
    errno.EROFS: ("the file system is read-only",
                  "make the workspace writable or point STUDIO_WORKSPACE at a writable folder"),
    errno.EACCES: ("permission denied", "fix the workspace's permissions or point STUDIO_WORKSPACE at a "
                                        "folder you can write"),
    errno.EPERM: ("operation not permitted", "fix the workspace's permissions or point STUDIO_WORKSPACE at a "
                                             "folder you can write"),
    errno.EISDIR: ("a directory is in the way of a file", "remove or rename that directory"),
    errno.ENOTDIR: ("a file is in the way of a directory", "remove or rename that file"),
    errno.EIO: ("the disk reported an I/O error", "check the disk (it may be failing or disconnected)"),
}


def describe_os_error(error: OSError, action: str, path: object) -> str:
    """`cannot <action> in <path>: <what happened> (<system message>); <what to do>`."""
    what, fix = _ADVICE.get(error.errno, ("the system refused", "check the path, its permissions and free space"))
    detail = error.strerror or str(error) or type(error).__name__
    return f"cannot {action} in {path}: {what} ({detail}); {fix}"


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


_SQLITE_ERRNO = (("disk is full", errno.ENOSPC), ("readonly", errno.EROFS), ("read-only", errno.EROFS),
                 ("disk i/o error", errno.EIO), ("unable to open", errno.EACCES))


def describe_sqlite_error(error: Exception, action: str, path: object) -> str:
    """The same wording for SQLite's failures ("database or disk is full", "attempt to write a readonly
    database", "unable to open database file", "disk I/O error"), which carry no errno."""
    text = str(error).lower()
    code = next((c for key, c in _SQLITE_ERRNO if key in text), None)
    if code == errno.EACCES and path is not None and os.path.isdir(str(path)):
        code = errno.EISDIR
    return describe_os_error(OSError(code, str(error)), action, path)
