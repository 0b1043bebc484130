"""Atomic file output: write to a hidden temporary beside the target, then rename over it.

A reader (or a resumed run) therefore sees either the old file, the complete new file, or nothing;
never a half-written one. Temporaries left by a killed process are removed by the next writer of the
same target.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

_TMP_MARK = ".tmp-"


def _temp_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}{_TMP_MARK}{os.getpid()}")


def remove_stale_temporaries(dest: Path) -> None:
    """Delete temporaries for `dest` whose writing process is gone (a killed earlier run)."""
    prefix = f".{dest.name}{_TMP_MARK}"
    if not dest.parent.is_dir():
        return
    for p in dest.parent.iterdir():
        if not p.name.startswith(prefix):
            continue
        pid = p.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def scratch_path(dest: str | os.PathLike, role: str) -> Path:
    """A hidden per-process scratch file beside `dest` (cleaned like a temporary if a run is killed)."""
    named = Path(dest).with_name(f"{Path(dest).name}.{role}")
    remove_stale_temporaries(named)
    return _temp_name(named)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `dest`, on any error it is removed."""
    dest = Path(dest)
    tmp = _temp_name(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(dest)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and (e.filename is None or str(e.filename) == str(tmp)):
            e.filename = str(dest)  # name the file the user asked for, not our hidden temporary
        raise


def write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `dest` atomically (an object on object storage: whole or absent)."""
    from curate.core.location import RemotePath

    if isinstance(dest, RemotePath):
        dest.write_bytes(data)
        return
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_json(dest: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `dest` atomically."""
    write_bytes(dest, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())
