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

Safety (curate.core.web): every request must name an allowed Host (DNS rebinding); a POST must be
same-origin, a JSON object in UTF-8, at most MAX_BODY bytes and nested at most MAX_DEPTH deep (the API's
bodies nest two deep: {"crop_ids": [...]}). A hostile body gets a 4xx with a short JSON error, never a 500. A decision the log cannot take (a full
or read-only disk) gets a 503 naming the database and the cause, and nothing changes on the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from curate.review.session import MAX_PAGE, SORTS, ReviewSession, ThumbnailCache
from curate.core.errors import CurateError
from curate.core.web import HostCheck, read_json_body, refuse, same_origin_problem
from curate.core.workdir import REVIEW_STATUSES

HERE = Path(__file__).resolve().parent
ORIGINS = ("grid", "accept-page")  # what the page may record; 'undo' is written by /api/undo only
PER_PAGE_CHOICES = (50, 100, 200, 400, 1000)


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
            return refuse(400, "send {p: a probability in (0, 1]}")
        if not session.has_model:
            return refuse(409, "there is no reject model yet: decide more crops first")
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
            return refuse(400, "send an object: {crop_ids: [...], status: ...}")
        ids, status, origin = body.get("crop_ids"), body.get("status"), body.get("origin", "grid")
        if status not in REVIEW_STATUSES:
            return refuse(400, f"status must be one of {', '.join(REVIEW_STATUSES)}")
        if origin not in ORIGINS:
            return refuse(400, f"origin must be one of {', '.join(ORIGINS)}")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_PAGE or not all(isinstance(c, str) for c in ids):
            return refuse(400, f"crop_ids must be a list of 1 to {MAX_PAGE} crop ids")
        unknown = [c for c in ids if c not in index.position]
        if unknown:
            return refuse(404, f"not in the crops table: {', '.join(unknown[:5])}")
        return await changed_response(session.decide, ids, status, origin)

    async def undo(request: Request) -> Response:
        body, refusal = await checked_post(request)
        if refusal:
            return refusal
        if not isinstance(body, dict):
            return refuse(400, "send an object: {}")
        return await changed_response(session.undo)

    async def checked_post(request: Request) -> tuple[Any, Response | None]:
        """A POST's JSON body, or the refusal: cross-origin, not JSON, too large."""
        problem = same_origin_problem(request)
        if problem:
            return None, refuse(403, problem)
        return await read_json_body(request)

    async def changed_response(change, *args) -> Response:
        # Starlette's thread pool: the SQLite commit (an fsync) must not block the event loop.
        try:
            changed = await run_in_threadpool(change, *args)
        except CurateError as e:  # the log cannot be written (disk full, read-only): nothing changed
            return refuse(503, f"{getattr(e, 'cause', e)}; nothing was saved: try again once the disk can take it")
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
