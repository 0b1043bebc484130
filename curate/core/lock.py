"""One writer at a time: an exclusive lock on a stage's output, released when its process dies.

`stage_lock(path, what)` takes an `flock` on a small lock file that holds the owner's pid. A second run
into the same output refuses at once with one line (a `LockedError`) instead of racing the first.

Two ways a dead run could leave the lock held, and what closes each:
- Pool workers forked while the lock was open share its open file description, so orphaned workers
  would keep it. `curate.core.pool` closes every lock this module holds in each worker it starts, and
  workers die with their parent (PR_SET_PDEATHSIG), so they neither hold it nor outlive the run.
- Anything else still holding it (a child started some other way): if the pid written in the lock file
  is no longer alive, the lock is stale, and it is taken over: the file is replaced by a fresh one (a
  new inode, so the old holders' lock no longer guards anything) and locked anew.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

from curate.core.atomic import _pid_alive
from curate.core.errors import CurateError

# fds of the locks this process holds: closed in pool workers, which must never keep one alive.
_held: set[int] = set()


class LockedError(CurateError):
    """Another live run holds the lock on this output."""

    exit_code = 1


def held_lock_fds() -> frozenset[int]:
    """The file descriptors of the locks this process holds (what a forked worker must close)."""
    return frozenset(_held)


def _owner(path: Path) -> int | None:
    """The pid written in the lock file; a holder writes it right after locking, so wait a moment for it."""
    for _ in range(40):
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text().strip()
            if text:
                return int(text)
        time.sleep(0.025)
    return None


def _try_lock(path: Path) -> int | None:
    """Open `path` and take the lock without waiting; return the fd, or None if someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # The file we locked may have been replaced by a takeover between open and flock: then our lock
    # guards nothing, and we must try again on the new file.
    try:
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return _try_lock(path)
    return fd


@contextlib.contextmanager
def stage_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the exclusive lock `path` for the block; `what` names the output in the refusal.

    Raises LockedError (one line: who holds it, what to do) if a live process holds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _try_lock(path)
    if fd is None:
        owner = _owner(path)
        if owner is not None and owner != os.getpid() and _pid_alive(owner):
            raise LockedError(f"another run (pid {owner}) is writing {what}; wait for it to finish or stop it")
        # The owner is gone but something it started still holds the lock: take it over.
        stale = path.with_name(f"{path.name}.stale-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, stale)
            stale.unlink()
        fd = _try_lock(path)
        if fd is None:  # another new run took it over first
            owner = _owner(path)
            raise LockedError(f"another run (pid {owner}) is writing {what}; wait for it to finish or stop it")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held.add(fd)
        yield
    finally:
        _held.discard(fd)
        # Unlink while still holding the lock, so that no one locks a file that is about to vanish.
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                path.unlink()
        os.close(fd)
