"""Which engine runs a stage's work: the local process pool, or another one such as Apache Beam.

A stage command parses and checks its options, builds the stage's config, and then hands the work
to `current_engine()`: `.filter(...)`, `.crop(...)`, `.score(...)`, `.dedup(...)`, `.pack(...)`, each with the local
runner's own signature and returning the same stats. The local engine simply is those runners.
`curate run --engine beam` passes another engine (curate.beam.engine.BeamEngine) as the click
context's object, so every stage runs through its own command, with the same option checks and
messages, whichever engine does the work.
"""

from __future__ import annotations

from typing import Any

import click


class LocalEngine:
    """The stages' local runners: a process pool on this machine."""

    name = "local"

    def filter(self, *args, **kwargs) -> dict[str, Any]:
        from curate.filter.runner import run_filter

        return run_filter(*args, **kwargs)

    def crop(self, *args, **kwargs) -> dict[str, Any]:
        from curate.crop.runner import run_crop

        return run_crop(*args, **kwargs)

    def score(self, *args, **kwargs) -> dict[str, Any]:
        from curate.score.runner import run_score

        return run_score(*args, **kwargs)

    def dedup(self, *args, **kwargs) -> dict[str, Any]:
        from curate.dedup.runner import run_dedup

        return run_dedup(*args, **kwargs)

    def pack(self, *args, **kwargs) -> dict[str, Any]:
        from curate.dataset.pack import run_pack

        return run_pack(*args, **kwargs)


LOCAL = LocalEngine()


def current_engine() -> LocalEngine:
    """The engine the running command was given (the click context's object), else the local one."""
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(LocalEngine) if ctx is not None else None
    return found or LOCAL
