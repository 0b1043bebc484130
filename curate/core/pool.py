"""Ordered, memory-bounded mapping of a per-item function over a process pool.

Every stage's per-item function is pure and picklable, so the same function runs in-process
(workers=1, easy to debug and test) or across processes with identical results. Results come back
in input order, and only `window` items are in flight at once, so a stream of large blocks never
piles up in memory the way `Pool.imap` (which drains its input eagerly) would.

Workers never outlive the run: on Linux each asks the kernel to kill it when its parent dies
(PR_SET_PDEATHSIG), so a `kill -9` of the stage leaves no orphan behind; and each closes the stage's
output locks it inherited through fork (curate.core.lock), so a worker can never keep a lock alive.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

from curate.core.lock import held_lock_fds

T = TypeVar("T")
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1

# The function a pool worker was handed when it started: state of the local runner's pool, set once
# per worker process by its initializer, never by a unit.
_worker_fn: Callable | None = None


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent exits (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _install(fn: Callable, parent_pid: int, lock_fds: frozenset[int]) -> None:
    global _worker_fn
    die_with_parent(parent_pid)
    for fd in lock_fds:  # the parent's stage locks, inherited through fork: not ours to hold
        with contextlib.suppress(OSError):
            os.close(fd)
    _worker_fn = fn


def _call(item):
    return _worker_fn(item)


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, window: int | None = None,
                start_method: str = "fork") -> Iterator[R]:
    """Yield fn(item) for each item, in order, using `workers` processes (1 = in this process).

    `start_method` "spawn" starts fresh interpreters: what a test uses to prove `fn` needs nothing
    inherited through fork.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    window = window or 2 * workers
    # fork (the default): workers inherit the loaded modules, so a task costs only its pickled arguments.
    # fn goes to each worker once, at its start, not with every task: a unit's lazily loaded state (a
    # cascade, a network) then lives as long as the worker instead of being rebuilt per item.
    ctx = multiprocessing.get_context(start_method)
    lock_fds = held_lock_fds() if start_method == "fork" else frozenset()
    ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_install, initargs=(fn, os.getpid(), lock_fds))
    pending: deque = deque()
    try:
        for item in items:
            pending.append(ex.submit(_call, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
