"""Running one measurement in a fresh interpreter, for bench/: its time and peak memory are its own."""

from __future__ import annotations

import multiprocessing
from typing import Any, Callable


def in_fresh_process(target: Callable[..., None], *args: Any) -> Any:
    """Run target(*args, q) in a spawned process and return the one thing it puts on q."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    result = q.get()
    p.join()
    return result
