"""The one HTTP client: a request-rate limit, retries with exponential backoff, resumable downloads.

`curate fetch` (the Danbooru API) and `curate models install` (release assets) both use it. Politely:
a descriptive User-Agent, at most `rate` requests a second, and on a transient failure (429 or 5xx,
a timeout, a dropped connection) a retry after `backoff * 2**attempt` seconds, or after the server's
`Retry-After` (seconds or an HTTP date). A 4xx other than 429, no DNS, or nothing listening is not
retried: trying again will not help. Failures surface as urllib's own exceptions (HTTPError,
URLError, TimeoutError, ConnectionError), which each caller turns into its own one-line message.
"""

from __future__ import annotations

import email.utils
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from curate import __version__

USER_AGENT = f"curate/{__version__} (dataset builder for GAN research; polite: rate-limited, resumable)"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# what a dropped or stalled connection raises; HTTPError (a URLError) is handled before these
TRANSIENT = (TimeoutError, ConnectionError, http.client.HTTPException)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT; parsedate gives naive for "-0000"
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class Client:
    """HTTP GETs with a rate limit and retries; the only code in curate that touches the network."""

    def __init__(self, rate: float = 2.0, retries: int = 5, backoff: float = 1.0, timeout: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, user_agent: str = USER_AGENT, max_wait: float = 600.0):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.sleep = sleep
        self.user_agent = user_agent
        self.max_wait = max_wait  # a Retry-After beyond this is cut to it (a date far ahead is likely wrong)
        self._last = 0.0
        self.requests = 0

    def _wait_turn(self) -> None:
        delay = self._last + self.interval - time.monotonic()
        if delay > 0:
            self.sleep(delay)
        self._last = time.monotonic()

    def _request(self, url: str, headers: dict[str, str] | None = None) -> urllib.request.Request:
        return urllib.request.Request(url, headers={"User-Agent": self.user_agent, "Accept": "*/*", **(headers or {})})

    def _retrying(self, url: str, attempt_once: Callable[[], object]):
        """attempt_once() until it returns, retrying transient failures; the last failure is raised."""
        for attempt in range(self.retries + 1):
            self._wait_turn()
            self.requests += 1
            try:
                return attempt_once()
            except urllib.error.HTTPError as e:
                if e.code not in RETRY_STATUS or attempt == self.retries:
                    raise
                wait = retry_after_seconds(e.headers.get("Retry-After"))
                if wait is None:
                    wait = self.backoff * 2 ** attempt
            except urllib.error.URLError as e:
                if isinstance(e.reason, (socket.gaierror, ConnectionRefusedError)) or attempt == self.retries:
                    raise  # no DNS, or nothing listening: retrying will not help
                wait = self.backoff * 2 ** attempt
            except TRANSIENT:
                if attempt == self.retries:
                    raise
                wait = self.backoff * 2 ** attempt
            self.sleep(min(wait, self.max_wait))
        raise AssertionError("unreachable")

    def get(self, url: str) -> bytes:
        """The body of a 200 response, after up to `retries` retries of transient failures."""
        def once() -> bytes:
            with urllib.request.urlopen(self._request(url), timeout=self.timeout) as resp:
                return resp.read()
        return self._retrying(url, once)

    def download(self, url: str, part: str | os.PathLike, *, on_total: Callable[[int | None, int], None] | None = None,
                 on_block: Callable[[int], None] | None = None, block: int = 1 << 20) -> Path:
        """Stream `url` into the file `part`, continuing from its size with an HTTP Range request (a retry after a
        dropped connection continues too); a server that ignores Range is read from the start. `on_total(total,
        have)` is told the expected size when the response starts, `on_block(n)` each block written. An HTTP 416
        (the file is already whole) is raised as HTTPError for the caller to judge."""
        part = Path(part)

        def once() -> Path:
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            with urllib.request.urlopen(self._request(url, headers), timeout=self.timeout) as resp:
                if have and resp.status != 206:  # the server ignored Range: start again
                    have = 0
                length = resp.headers.get("Content-Length")
                if on_total is not None:
                    on_total(have + int(length) if length is not None else None, have)
                got = 0
                with open(part, "ab" if have else "wb") as f:
                    while data := resp.read(block):
                        f.write(data)
                        got += len(data)
                        if on_block is not None:
                            on_block(len(data))
                if length is not None and got < int(length):  # read(n) ends quietly when the peer hangs up
                    raise http.client.IncompleteRead(b"", int(length) - got)
            return part
        return self._retrying(url, once)
