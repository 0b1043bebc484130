"""What every local web page of curate shares (the review grid, the explorer): the Host and same-origin
checks, bounded request bodies, the loopback socket and the server loop.

Safety: every request must name an allowed Host (DNS rebinding); a state-changing request must be
same-origin (Origin and Sec-Fetch-Site when the browser sends them); a body is read up to a bound, and
a JSON body is checked for nesting before it is parsed (Python's parser recurses, so 100k `[` would
overflow it). A hostile request gets a 4xx with a short JSON error, never a 500.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from typing import Any
from urllib.parse import urlsplit

import click
import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse

MAX_BODY = 256 * 1024  # the review grid's largest body (a page of 1000 crop ids) is ~30 KB
MAX_DEPTH = 8
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def refuse(status: int, why: str) -> JSONResponse:
    """A refusal as the pages read it: {"error": why} with the status."""
    return JSONResponse({"error": why}, status_code=status)


def host_only(host: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1', '[::1]:80' -> '::1'."""
    return urlsplit(f"//{host}").hostname or ""


def same_origin_problem(request: Request) -> str | None:
    """Why a state-changing request is refused as cross-origin, or None when it is acceptable."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    if origin is not None:
        o = urlsplit(origin)
        if o.scheme not in ("http", "https") or o.netloc != request.headers.get("host", ""):
            return f"cross-origin request refused (Origin: {origin})"
    return None


# A JSON string, closing quote optional: an unterminated one runs to the end, so the scan stays linear.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.S)
_BRACKET_STEP = np.zeros(256, np.int32)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


def nesting_depth(body: bytes) -> int:
    """How deep the arrays and objects of a UTF-8 JSON text nest, brackets inside strings not counted.

    Linear time, without parsing. On malformed text it may count too deep, never too shallow over the
    part a parser would read before failing, which is what bounds the parser's recursion."""
    outside = np.frombuffer(_JSON_STRING.sub(b"", body), np.uint8)
    return int(np.cumsum(_BRACKET_STEP[outside]).max(initial=0))


def parse_json_body(body: bytes, max_depth: int = MAX_DEPTH) -> tuple[Any, JSONResponse | None]:
    """A request body as JSON (UTF-8, nested at most max_depth deep; empty = {}), or a 400 refusal."""
    try:
        text = bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, refuse(400, "the body is not UTF-8 text")
    if nesting_depth(body) > max_depth:
        return None, refuse(400, f"the body nests more than {max_depth} deep")
    try:
        return json.loads(text or "{}"), None
    except (ValueError, RecursionError):
        return None, refuse(400, "the body is not JSON")


async def read_body(request: Request, max_body: int = MAX_BODY) -> tuple[bytes | None, JSONResponse | None]:
    """The raw body, at most max_body bytes (the declared length checked first), or a 413 refusal."""
    too_big = refuse(413, f"request body over {max_body:,} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and (not (declared.isascii() and declared.isdigit()) or int(declared) > max_body):
        return None, too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            return None, too_big
    return bytes(body), None


async def read_json_body(request: Request, max_body: int = MAX_BODY,
                         max_depth: int = MAX_DEPTH) -> tuple[Any, JSONResponse | None]:
    """The JSON body, bounded by max_body and max_depth, or a refusal (413, 415, 400)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return None, refuse(415, "send JSON (Content-Type: application/json)")
    body, refusal = await read_body(request, max_body)
    if refusal:
        return None, refusal
    return parse_json_body(body, max_depth)


class HostCheck:
    """ASGI middleware: refuse requests whose Host is not one the server was started for."""

    def __init__(self, app, allowed: set[str] | None):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.allowed is not None:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_only(host) not in self.allowed:
                await refuse(403, f"unexpected Host header {host!r}")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> set[str] | None:
    """The Host names a server bound to `host` accepts: the loopback names for a loopback bind, else any."""
    return {*LOOPBACK_NAMES, host} if is_loopback(host) else None


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0 = any free one); UsageError when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be named: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and
    # without it every keep-alive response waits ~40 ms (Nagle against the browser's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise click.UsageError(f"cannot listen on {host}:{port} ({e.strerror}); pick another with --port N (0 = any free port)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def page_url(host: str, sock: socket.socket) -> str:
    """The URL to print for a server listening on `sock` (bound to `host`)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "localhost") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{sock.getsockname()[1]}/"


def serve(app, sock: socket.socket) -> None:
    """Run `app` with uvicorn on the pre-bound socket until Ctrl+C (quiet: no access log, no lifespan)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    server.run(sockets=[sock])
