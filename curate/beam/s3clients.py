"""One boto3 S3 client per process and set of connection options, for Beam's S3 file system.

Beam's `S3FileSystem` builds a new `S3IO` for every call (exists, match, open, rename, ...), and each
builds a new boto3 Session and client. A new Session reads botocore's JSON service models again, about
a quarter of a second a call here: a dedup of a small workdir on a bucket spent 20.6 s of its 23.5 s
making 75 clients (bench/s3_clients.py measures it). boto3's low-level clients are thread-safe and hold
no per-call state, so one per option set serves every call; Beam's wrapper (`boto3_client.Client`) keeps
its per-download state of its own and is still made anew each call.

`install()` swaps the `boto3` name inside Beam's wrapper module for a small stand-in whose
`session.Session().client(**kwargs)` hands back the cached client for those exact kwargs (region,
endpoint, credentials, ssl, verify). It is idempotent, and it is called wherever Beam's file systems are
used: when `curate.beam` is imported (so on every Beam worker, which unpickles curate's DoFns) and by
`curate.core.location` before a launcher reads a URL.
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_clients: dict[tuple, object] = {}
_pid = os.getpid()


class _CachingSession:
    """Stands in for `boto3.session.Session()`: `client()` is cached on its exact arguments."""

    def __init__(self, boto3_module):
        self._boto3 = boto3_module

    def client(self, *args, **kwargs):
        global _pid
        key = (args, tuple(sorted(kwargs.items())))
        with _lock:
            if os.getpid() != _pid:  # a forked child: its parent's connections are not its own
                _clients.clear()
                _pid = os.getpid()
            client = _clients.get(key)
            if client is None:
                # one creation at a time: a boto3 Session must not make clients from two threads at once
                client = self._boto3.session.Session().client(*args, **kwargs)
                _clients[key] = client
        return client


class _SessionModule:
    def __init__(self, boto3_module):
        self._boto3 = boto3_module

    def Session(self, *args, **kwargs):  # noqa: N802  boto3's own name
        if args or kwargs:  # a profile or explicit credentials on the Session itself: not ours to cache
            return self._boto3.session.Session(*args, **kwargs)
        return _CachingSession(self._boto3)


class _Boto3:
    """The `boto3` name as Beam's wrapper module sees it: boto3 itself, with a caching `session`."""

    def __init__(self, boto3_module):
        self._boto3 = boto3_module
        self.session = _SessionModule(boto3_module)

    def __getattr__(self, name):
        return getattr(self._boto3, name)


def install() -> bool:
    """Make Beam's S3 file system reuse one boto3 client per option set; True once in place.

    False (and nothing changed) where Beam's AWS support or boto3 is not installed, or where a Beam
    release has moved the wrapper: then Beam runs as it ships, only slower.
    """
    try:
        from apache_beam.io.aws.clients.s3 import boto3_client
    except ImportError:
        return False
    current = getattr(boto3_client, "boto3", None)
    if isinstance(current, _Boto3):
        return True
    if current is None:
        return False
    boto3_client.boto3 = _Boto3(current)
    return True


def uninstall() -> None:
    """Put Beam's module back as it ships and forget the clients (the bench's baseline)."""
    try:
        from apache_beam.io.aws.clients.s3 import boto3_client
    except ImportError:
        return
    current = getattr(boto3_client, "boto3", None)
    if isinstance(current, _Boto3):
        boto3_client.boto3 = current._boto3
    with _lock:
        _clients.clear()
