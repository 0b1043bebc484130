"""The review decision log (WORKDIR/review.sqlite, schema in curate.core.workdir) read on any disk,
and its SQLite failures as one line.

sqlite3's errors are not OSErrors: `log_failure` turns one into a CurateError that names the database
and the cause in the system's words (a full disk, a read-only one) and says what to do. `read_log`
opens the log read-only, and on read-only media (where SQLite cannot create the -shm file a WAL
reader needs) as immutable. Review and pack both read the log through it.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from curate.core.errors import CurateError, EnvironmentFailure, InputError, describe_os_error


class DecisionLogError(EnvironmentFailure):
    """The decision log cannot be read or written (a full or read-only disk): one line, exit 1.

    `cause` is the message without its advice ("path: what went wrong"), for callers that advise otherwise.
    """

    def __init__(self, message: str, cause: str | None = None):
        super().__init__(message)
        self.cause = cause or message


# SQLite's result codes for "the machine cannot do this now", as the errno that says the same.
_SQLITE_ERRNO = {"SQLITE_FULL": errno.ENOSPC, "SQLITE_IOERR": errno.EIO, "SQLITE_NOMEM": errno.ENOMEM}


def _folder_read_only(path: Path) -> bool:
    return not os.access(path.parent, os.W_OK)


def log_failure(e: sqlite3.Error, db: Path) -> CurateError:
    """A sqlite3 error on the decision log `db` as one line: the path, the cause, what to do."""
    name = getattr(e, "sqlite_errorname", "") or ""
    code = next((n for prefix, n in _SQLITE_ERRNO.items() if name.startswith(prefix)), None)
    if code is None and name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
        if _folder_read_only(db) or (db.exists() and not os.access(db, os.W_OK)):
            try:
                ro = bool(os.statvfs(db.parent).f_flag & os.ST_RDONLY)
            except OSError:
                ro = False
            code = errno.EROFS if ro else errno.EACCES
    if code is not None:
        error = OSError(code, os.strerror(code))
        return DecisionLogError(describe_os_error(error, db), cause=f"{db}: {error.strerror}")
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or isinstance(e, sqlite3.DatabaseError) and \
            "not a database" in str(e):
        return InputError(f"{db} is not a review decision log ({e}); move it aside to start a new one")
    return DecisionLogError(f"{db}: {e}")


def _uri(db: Path, **params: str) -> str:
    return db.resolve().as_uri() + "?" + "&".join(f"{k}={v}" for k, v in params.items())


def read_log(db: Path, query: str) -> list[tuple]:
    """The rows of `query` on the decision log opened read-only ([] without a log), on any disk."""
    db = Path(db)
    if not db.exists():
        return []

    def rows(uri: str) -> list[tuple]:
        con = sqlite3.connect(uri, uri=True)
        try:
            return con.execute(query).fetchall()
        finally:
            con.close()

    try:
        return rows(_uri(db, mode="ro"))
    except sqlite3.Error as e:
        if not (isinstance(e, sqlite3.OperationalError) and _folder_read_only(db)):
            raise log_failure(e, db) from None
    # A read-only folder: SQLite cannot make the -shm file a WAL reader needs. Nothing can write
    # there, so the file may be read as immutable, unless a killed server left decisions in its WAL.
    wal = db.with_name(db.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise DecisionLogError(f"{db}: its latest decisions are still in {wal.name} and the folder is read-only, "
                               "so SQLite cannot read them; copy the workdir to a writable disk and run this there")
    try:
        return rows(_uri(db, mode="ro", immutable="1"))
    except sqlite3.Error as e:
        raise log_failure(e, db) from None
