"""Output paths that would destroy or pollute an input are refused before a stage writes anything."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from curate.core.errors import InputError
from curate.core.location import RemotePath, is_url


def real_location(p: str | os.PathLike) -> Path | RemotePath:
    """The path with symlinks followed; a URL (object storage) as it is, which has no links."""
    return RemotePath(str(p)) if is_url(p) else Path(os.path.realpath(os.fspath(p)))


def refuse_output_among_inputs(output: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (),
                               roots: Iterable[str | os.PathLike] = (), option: str = "--out") -> None:
    """Raise InputError (one line) if `output` is one of `inputs`, or lies inside an input folder or a root.

    `inputs` are the files and folders a stage reads; `roots` are folders it reads below (a dataset
    root), which must stay untouched. Symlinks are followed, so another name for an input is caught.
    An input inside the output is fine (work/filtered.parquet read by `crop ... --out work`).
    """
    out = real_location(output)
    for given in inputs:
        src = real_location(given)
        if out == src:
            raise InputError(f"{option} {output} is also an input ({given}): writing it would destroy the input; "
                             f"choose another {option}")
        if src.is_dir() and out.is_relative_to(src):
            raise InputError(f"{option} {output} is inside the input folder {given}: later runs would read it "
                             f"as input; choose a {option} outside it")
    for given in roots:
        if out.is_relative_to(real_location(given)):
            raise InputError(f"{option} {output} is inside the dataset root {given}, which is only read; "
                             f"choose a {option} outside it")
