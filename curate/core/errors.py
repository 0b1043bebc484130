"""The one base class of user-facing failures, and the errors more than one stage raises.

A `CurateError` is a failure a stage detects itself and can explain in one line: bad input, a missing
file, options that contradict each other. The `curate` group (curate.cli.StageGroup) turns any that
escapes a command into one line, `curate <cmd>: error: <message>`, and exits with its `exit_code`:

  2  the request is wrong (misuse, bad or missing input): like click's usage errors, the line ends
     with "(see 'curate <cmd> --help')";
  1  the request is fine but the world is not (the network is down, the disk is full): trying again
     later may work.

Bad *items* (an undecodable image, a malformed metadata line) are not errors: they are reason codes.
An *environment* error (a full disk, a read-only output, an I/O error, no file descriptors left) is
never an item's fault: `is_environment_error` tells them apart, and a stage that meets one stops with
`EnvironmentFailure` instead of recording the item as bad, so that a resume redoes it.
"""

from __future__ import annotations

import errno
import os

# errno values that say "the machine cannot do this now", whatever the item: the stage must stop.
ENVIRONMENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENOMEM,
})

# What to suggest for each, after the path and the system's own words.
_ADVICE = {
    errno.ENOSPC: "free some space (or choose another output), then run the same command again to resume",
    errno.EDQUOT: "free some space (or choose another output), then run the same command again to resume",
    errno.EROFS: "choose an output on a writable file system",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EPERM: "check the permissions, or choose another path",
    errno.EIO: "the device reported an I/O error; check it, then run the same command again to resume",
    errno.EMFILE: "raise the open-file limit (ulimit -n) or use fewer --workers",
    errno.ENFILE: "the system ran out of open files; try again with fewer --workers",
}


class CurateError(Exception):
    """A user-facing failure with a one-line message that says what to do."""

    exit_code = 2


class InputError(CurateError):
    """An input path that cannot be used at all (missing, unreadable, the wrong kind of file)."""


class EnvironmentFailure(CurateError):
    """The machine failed the stage (disk full, read-only, I/O error): not the request, not an item."""

    exit_code = 1


def is_environment_error(e: BaseException) -> bool:
    """True for an OSError whose errno is about the machine rather than the item being processed."""
    return isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS


def describe_os_error(e: OSError, path: str | os.PathLike | None = None) -> str:
    """One line for an OSError: the path, the system's words, and what to do."""
    where = path if path is not None else (e.filename or "")
    # the system's own words for the errno (pyarrow wraps them: "Error writing bytes to file. Detail: ...")
    cause = os.strerror(e.errno) if isinstance(e.errno, int) and e.errno > 0 else (e.strerror or str(e) or type(e).__name__)
    advice = _ADVICE.get(e.errno)
    line = f"{os.fspath(where)}: {cause}" if where else cause
    return f"{line}; {advice}" if advice else line


def environment_failure(e: OSError, path: str | os.PathLike | None = None) -> EnvironmentFailure:
    """An EnvironmentFailure that names `path` (or the error's own filename) and the cause."""
    return EnvironmentFailure(describe_os_error(e, path))
