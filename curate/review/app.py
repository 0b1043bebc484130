"""The review grid as an ASGI app (Starlette): a thin web layer over curate.review.session.ReviewSession.

Routes:
    GET  /                 the grid page (server-rendered; filters and paging are query parameters)
    GET  /api/page         the same page as JSON
    GET  /thumb/{row}      the thumbnail of crops-table row `row` (only listed crops; cached on disk)
    POST /api/decide       {"crop_ids": [...], "status": "rejected", "origin": "grid"}  -> changes + counts
    POST /api/undo         {}                                                        -> changes + counts
    GET  /api/model?below=P   the reject model's state, figures, and how many pending crops are below P
    POST /api/accept-below {"p": 0.05}: accept every pending crop with p_reject < p (one undoable action)
    GET  /static/...       the page's CSS and JS (served from the package: no CDN, no build step)

Safety: every request must name an allowed Host (DNS rebinding); a POST must be same-origin (Origin and
Sec-Fetch-Site when the browser sends them), a JSON object in UTF-8, at most MAX_BODY bytes and nested at
most MAX_DEPTH deep (checked before parsing: Python's parser recurses, so 100k `[` would overflow it).
A hostile body gets a 4xx with a short JSON error, never a 500. A decision the log cannot take (a full
or read-only disk) gets a 503 naming the database and the cause, and nothing changes on the page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from curate.review.session import MAX_PAGE, SORTS, ReviewSession, ThumbnailCache
from curate.core.errors import CurateError
from curate.core.workdir import REVIEW_STATUSES

HERE = Path(__file__).resolve().parent
MAX_BODY = 256 * 1024  # a page of 1000 crop ids is ~30 KB
MAX_DEPTH = 8  # the API's bodies nest two deep ({"crop_ids": [...]})
ORIGINS = ("grid", "accept-page")  # what the page may record; 'undo' is written by /api/undo only
PER_PAGE_CHOICES = (50, 100, 200, 400, 1000)


def _refuse(status: int, why: str) -> JSONResponse:
    return JSONResponse({"error": why}, status_code=status)


def _host_only(host: str) -> str:
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


def parse_json_body(body: bytes) -> tuple[Any, JSONResponse | None]:
    """A request body as JSON (UTF-8, nested at most MAX_DEPTH deep; empty = {}), or a 400 refusal."""
    try:
        text = bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, _refuse(400, "the body is not UTF-8 text")
    if nesting_depth(body) > MAX_DEPTH:
        return None, _refuse(400, f"the body nests more than {MAX_DEPTH} deep")
    try:
        return json.loads(text or "{}"), None
    except (ValueError, RecursionError):
        return None, _refuse(400, "the body is not JSON")


async def read_json_body(request: Request) -> tuple[Any, JSONResponse | None]:
    """The JSON body, bounded by MAX_BODY and MAX_DEPTH, or a refusal (413, 415, 400)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return None, _refuse(415, "send JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length")
    if declared is not None and (not (declared.isascii() and declared.isdigit()) or int(declared) > MAX_BODY):
        return None, _refuse(413, f"request body over {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None, _refuse(413, f"request body over {MAX_BODY} bytes")
    return parse_json_body(body)


class HostCheck:
    """ASGI middleware: refuse requests whose Host is not one the server was started for."""

    def __init__(self, app, allowed: set[str] | None):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.allowed is not None:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if _host_only(host) not in self.allowed:
                await _refuse(403, f"unexpected Host header {host!r}")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(session: ReviewSession, allowed_hosts: set[str] | None = None, per_page: int = 200) -> Any:
    """The ASGI app for one review session; allowed_hosts=None accepts any Host (non-loopback binds)."""
    thumbs = ThumbnailCache(session.workdir, session.index)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    index = session.index

    def query(request: Request) -> dict[str, Any]:
        q = request.query_params
        status = q.get("status", "")
        label = q.get("reason", "")
        sort = q.get("sort", session.default_sort())
        try:
            start = max(0, int(q.get("start", 0)))
            size = min(MAX_PAGE, max(1, int(q.get("n", per_page))))
        except ValueError:
            start, size = 0, per_page
        return {
            "status": status if status in REVIEW_STATUSES else "",
            "reason": label if label in index.label_names else "",
            "sort": sort if sort in SORTS else session.default_sort(),
            "start": start,
            "n": size,
        }

    def grid(request: Request) -> Response:
        q = query(request)
        page = session.page(q["status"] or None, q["reason"] or None, q["sort"], q["start"], q["n"])

        def link(start: int | None) -> str | None:
            if start is None:
                return None
            params = {k: v for k, v in {**q, "start": start}.items() if v not in ("", None) and not (k == "start" and v == 0)}
            return "/?" + urlencode(params) if params else "/"

        return templates.TemplateResponse(request, "grid.html", {
            "page": page, "q": q, "token": index.token, "sorts": SORTS, "statuses": REVIEW_STATUSES,
            "labels": session.label_counts(), "per_page_choices": sorted({*PER_PAGE_CHOICES, q["n"]}),
            "prev_href": link(page["prev_start"]), "next_href": link(page["next_start"]),
            "first_href": link(0) if page["offset"] > 0 else None,
            "thumb_w": thumbs.size[0], "thumb_h": thumbs.size[1], "workdir": str(session.workdir.root),
            "model": session.model_summary(),
        }, headers={"Cache-Control": "no-store"})

    def api_model(request: Request) -> Response:
        try:
            below = float(request.query_params.get("below", 0.05))
        except ValueError:
            below = 0.05
        return JSONResponse({**session.model_summary(min(1.0, max(0.0, below))), "counts": session.counts()},
                            headers={"Cache-Control": "no-store"})

    async def accept_below(request: Request) -> Response:
        body, refusal = await checked_post(request)
        if refusal:
            return refusal
        p = body.get("p") if isinstance(body, dict) else None
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            return _refuse(400, "send {p: a probability in (0, 1]}")
        if not session.has_model:
            return _refuse(409, "there is no reject model yet: decide more crops first")
        return await changed_response(session.accept_below, float(p))

    def api_page(request: Request) -> Response:
        q = query(request)
        return JSONResponse(session.page(q["status"] or None, q["reason"] or None, q["sort"], q["start"], q["n"]))

    def thumb(request: Request) -> Response:
        row = request.path_params["row"]  # an int by the route's converter: never a path
        if not 0 <= row < len(index):
            return Response("no such crop", status_code=404, media_type="text/plain")
        data, tag = thumbs.get(row)
        if data is None:
            return Response(f"crop cannot be shown: {tag}", status_code=404, media_type="text/plain",
                            headers={"Cache-Control": "no-store"})
        etag = f'"{tag}"'
        # The page asks for /thumb/N?v=<table version>: such a URL always names the same crop image,
        # so the browser may keep it; any other URL must be revalidated.
        fresh = request.query_params.get("v") == index.token
        headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable" if fresh else "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    async def decide(request: Request) -> Response:
        body, refusal = await checked_post(request)
        if refusal:
            return refusal
        if not isinstance(body, dict):
            return _refuse(400, "send an object: {crop_ids: [...], status: ...}")
        ids, status, origin = body.get("crop_ids"), body.get("status"), body.get("origin", "grid")
        if status not in REVIEW_STATUSES:
            return _refuse(400, f"status must be one of {', '.join(REVIEW_STATUSES)}")
        if origin not in ORIGINS:
            return _refuse(400, f"origin must be one of {', '.join(ORIGINS)}")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_PAGE or not all(isinstance(c, str) for c in ids):
            return _refuse(400, f"crop_ids must be a list of 1 to {MAX_PAGE} crop ids")
        unknown = [c for c in ids if c not in index.position]
        if unknown:
            return _refuse(404, f"not in the crops table: {', '.join(unknown[:5])}")
        return await changed_response(session.decide, ids, status, origin)

    async def undo(request: Request) -> Response:
        body, refusal = await checked_post(request)
        if refusal:
            return refusal
        if not isinstance(body, dict):
            return _refuse(400, "send an object: {}")
        return await changed_response(session.undo)

    async def checked_post(request: Request) -> tuple[Any, Response | None]:
        """A POST's JSON body, or the refusal: cross-origin, not JSON, too large."""
        problem = same_origin_problem(request)
        if problem:
            return None, _refuse(403, problem)
        return await read_json_body(request)

    async def changed_response(change, *args) -> Response:
        # Starlette's thread pool: the SQLite commit (an fsync) must not block the event loop.
        try:
            changed = await run_in_threadpool(change, *args)
        except CurateError as e:  # the log cannot be written (disk full, read-only): nothing changed
            return _refuse(503, f"{getattr(e, 'cause', e)}; nothing was saved: try again once the disk can take it")
        return JSONResponse({"changed": changed, "counts": session.counts()})

    app = Starlette(routes=[
        Route("/", grid),
        Route("/api/page", api_page),
        Route("/thumb/{row:int}", thumb),
        Route("/api/decide", decide, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/api/model", api_model),
        Route("/api/accept-below", accept_below, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ])
    return HostCheck(app, allowed_hosts)
