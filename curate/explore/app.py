"""`curate explore`'s page as an ASGI app (Starlette): a thin web layer over curate.explore's Explorer.

The app keeps every image it has shown as an id -> (Latent, edits) (bounded: the oldest go first), and
the media it has made (strips, GIFs, tile sheets) the same way. Every image URL is /img/{id}.png, the
PNG carrying its latent and edits, so a download dropped back on the page (or given to `curate
generate --from`) brings the same image back.

Routes:
    GET  /                         the page
    GET  /api/state                the run, its levels, its saved directions and edits
    GET  /img/{id}.png             an image shown before (its PNG carries its latent)
    GET  /media/{id}.{png|gif}     a strip, an animation or a tile sheet made before (?download=NAME)
    POST /api/generate             {seeds: "1-8", psi}                        -> {images}
    POST /api/drop                 the bytes of a PNG this app (or the API) wrote  -> {image}
    POST /api/derive               {id, amounts: {direction: amount}, edits: [edit]} -> {image}
    POST /api/interpolate          {a, b, frames, space: "w"|"z"}             -> {strip, gif}
    POST /api/animate              {id, amounts, edit, frames, k}             -> {gif}
    POST /api/maps                 {id, level, order: "index"|"magnitude"}    -> {sheet, layout}
    POST /api/cell                 {id, level, x, y, n}                       -> {channels: [[c, value]]}
    POST /api/find-channels        {ids, level, region, n}                    -> {channels}
    POST /api/directions/mark      {name, with: [ids], without: [ids]}        -> {directions}
    POST /api/directions/combine   {name, parts: [[direction, weight]]}       -> {directions}
    POST /api/directions/delete    {name}                                     -> {directions}
    POST /api/directions/import    a directions JSON file (as exported)       -> {imported, directions}
    GET  /api/directions/export    RUN/explore/directions.json as a download
    POST /api/edits/save, /api/edits/delete, /api/edits/import; GET /api/edits/export: the same for edits
    GET  /static/...               the page's CSS and JS (from the package: no CDN, no build step)

Safety (curate.core.web): a foreign Host is refused (403), every POST must be same-origin (403), a JSON
body is bounded in size and depth and a PNG in size. A request the run cannot serve (an unknown
image, fewer than two marked images, a PNG without a latent) is a 4xx with a one-line reason, never a
500. The model runs one request at a time (one lock): TensorFlow's graph is shared and the CPU is too.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from curate.core.errors import CurateError
from curate.core.web import HostCheck, read_body, read_json_body, refuse, same_origin_problem
from curate.explore import Edit, ExploreError, Explorer, Latent
from curate.explore.latent import parse_seeds

HERE = Path(__file__).resolve().parent
MAX_JSON = 256 * 1024  # the page's own requests are a few hundred bytes
MAX_FILE = 32 * 1024 * 1024  # an imported directions/edits file (a 14x512 vector is ~80 KB of JSON)
MAX_PNG = 32 * 1024 * 1024  # a dropped PNG: a 512x256 image is well under 1 MB
MAX_DEPTH = 8
MAX_SEEDS = 64  # one generate request
MAX_FRAMES = 120  # an interpolation or an animation
MAX_IMAGES = 4096  # images held (a latent is num_layers x 512 float32, ~28 KB at 512x256)
MAX_MEDIA = 64  # strips, GIFs and sheets held
MAX_PNGS = 512  # encoded image PNGs kept for the browser's GETs
MAX_MAPS = 4  # feature maps kept for cell clicks (a 512x256 level is C x 131072 float32)
NAME = re.compile(r"[\w .+-]{1,64}")


class BadRequest(Exception):
    """A request the page should not have sent (or a hand-made one): 400 or the status given."""

    def __init__(self, why: str, status: int = 400):
        super().__init__(why)
        self.status = status


class Bounded(OrderedDict):
    """A dict that forgets its oldest entries past `limit` (what the page asked for long ago)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


def _number(body: dict, key: str, lo: float, hi: float, default: Any = None, integer: bool = False) -> Any:
    v = body.get(key, default)
    if v is None and default is None and key not in body:
        raise BadRequest(f"send {key}")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and v != int(v)) or not lo <= v <= hi:
        kind = "a whole number" if integer else "a number"
        raise BadRequest(f"{key} must be {kind} from {lo:g} to {hi:g}")
    return int(v) if integer else float(v)


def _name(body: dict, key: str = "name") -> str:
    v = body.get(key)
    if not isinstance(v, str) or not NAME.fullmatch(v.strip()):
        raise BadRequest(f"{key} must be 1 to 64 letters, digits, spaces or . + - _")
    return v.strip()


class ExploreSession:
    """What the page has been shown: images (id -> latent and edits), media, and maps for cell clicks."""

    def __init__(self, explorer: Explorer):
        from curate.explore.directions import DirectionStore
        from curate.explore.edits import EditStore

        self.ex = explorer
        self.directions = DirectionStore(explorer.run_dir)
        self.edit_store = EditStore(explorer.run_dir)
        self.images: Bounded = Bounded(MAX_IMAGES)  # id -> (Latent, tuple[Edit, ...], label)
        self.pngs: Bounded = Bounded(MAX_PNGS)
        self.media: Bounded = Bounded(MAX_MEDIA)  # id -> (bytes, media type)
        self.maps: Bounded = Bounded(MAX_MAPS)  # (image id, level) -> float32 [C, h, w]
        self.next_id = 1
        self.lock = threading.Lock()  # one model call at a time
        self.levels = {d["level"]: d for d in explorer.levels()}

    # --- what the page sends, checked ---
    def image(self, v: Any) -> tuple[int, Latent, tuple[Edit, ...]]:
        if isinstance(v, bool) or not isinstance(v, int):
            raise BadRequest("an image is named by its id (a number)")
        held = self.images.get(v)
        if held is None:
            raise BadRequest(f"image {v} is not held any more (or never was): generate it again", 404)
        return v, held[0], held[1]

    def level(self, body: dict) -> int:
        v = body.get("level")
        if isinstance(v, bool) or v not in self.levels:
            raise BadRequest(f"level must be one of {', '.join(map(str, self.levels))}")
        return int(v)

    def region(self, v: Any) -> tuple[float, float, float, float]:
        if (not isinstance(v, list) or len(v) != 4 or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v)
                or not 0 <= v[0] < v[2] <= 1 or not 0 <= v[1] < v[3] <= 1):
            raise BadRequest("region must be [x0, y0, x1, y1], fractions of the image with x0 < x1 and y0 < y1")
        return tuple(float(x) for x in v)

    def check_edit(self, e: Edit) -> None:
        """An imported edit that this run cannot apply: ExploreError (its level or channels)."""
        try:
            self.edit(e.to_json())
        except BadRequest as why:
            raise ExploreError(f"edit {e.name!r}: {why}") from None

    def edit(self, d: Any) -> Edit:
        if not isinstance(d, dict):
            raise BadRequest("an edit is {level, channels, region, multiplier}")
        level = self.level(d)
        channels = d.get("channels")
        count = self.levels[level]["channels"]
        if (not isinstance(channels, list) or not 1 <= len(channels) <= count
                or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < count for c in channels)):
            raise BadRequest(f"channels must be a list of channel numbers from 0 to {count - 1} at level {level}")
        name = d.get("name") or ""
        if name:
            name = _name(d)
        return Edit(level=level, channels=tuple(sorted(set(channels))), region=self.region(d.get("region")),
                    multiplier=_number(d, "multiplier", -1000, 1000), name=name)

    def moved(self, body: dict) -> tuple[int, Latent, tuple[Edit, ...]]:
        """The image `id` moved along the directions in `amounts` (its own edits kept)."""
        from curate.explore.directions import move

        i, latent, edits = self.image(body.get("id"))
        amounts = body.get("amounts") or {}
        if not isinstance(amounts, dict):
            raise BadRequest("amounts must be {direction name: amount}")
        saved = self.saved_directions()
        steps = []
        for name, amount in amounts.items():
            if name not in saved:
                raise BadRequest(f"no direction named {name!r}", 404)
            a = _number(amounts, name, -100, 100)
            if a:
                steps.append((saved[name], a))
        return i, (move(latent, steps) if steps else latent), edits

    def saved_directions(self) -> dict:
        """The run's directions by name, each fitted to this generator (a [D] vector to every layer)."""
        return {d.name: d.fit(self.ex) for d in self.directions.all()}

    # --- what the page is sent ---
    def show(self, latent: Latent, edits=(), label: str = "", parent: int | None = None) -> dict:
        i = self.next_id
        self.next_id += 1
        self.images[i] = (latent, tuple(edits), label)
        return {"id": i, "url": f"/img/{i}.png", "label": label, "seed": latent.seed, "psi": latent.psi,
                "edits": len(edits), "parent": parent}

    def keep_media(self, data: bytes, kind: str) -> str:
        i = self.next_id
        self.next_id += 1
        self.media[i] = (data, "image/gif" if kind == "gif" else "image/png")
        return f"/media/{i}.{kind}"

    def png(self, i: int) -> bytes | None:
        data = self.pngs.get(i)
        if data is None:
            held = self.images.get(i)
            if held is None:
                return None
            data = self.ex.png(held[0], list(held[1]))
            self.pngs[i] = data
        return data

    def feature_maps(self, i: int, latent: Latent, edits, level: int) -> np.ndarray:
        maps = self.maps.get((i, level))
        if maps is None:
            maps = self.ex.feature_maps(latent, level, list(edits))
            self.maps[(i, level)] = maps
        return maps

    def state(self) -> dict:
        ex = self.ex
        return {
            "run": str(ex.run_dir), "height": ex.height, "width": ex.width, "kimg": ex.kimg,
            "levels": list(self.levels.values()), "psi": ex.config.truncation_psi,
            "directions": self.direction_list(), "edits": self.edit_list(),
        }

    def direction_list(self) -> list[dict]:
        return [{"name": d.name, "source": d.source} for d in self.directions.all()]

    def edit_list(self) -> list[dict]:
        return [{"name": e.name, "level": e.level, "channels": list(e.channels), "region": list(e.region),
                 "multiplier": e.multiplier} for e in self.edit_store.all()]


def create_app(explorer: Explorer, allowed_hosts: set[str] | None = None) -> Any:
    """The ASGI app for one run; allowed_hosts=None accepts any Host (tests with their own client)."""
    from curate.explore import directions as dirs
    from curate.explore import edits as edit_ops
    from curate.explore import interp, maps as map_ops, media
    from curate.explore.latent import read_png

    s = ExploreSession(explorer)
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    def page(request: Request) -> Response:
        return templates.TemplateResponse(request, "explore.html", {"state": s.state()},
                                          headers={"Cache-Control": "no-store"})

    def api_state(request: Request) -> Response:
        return JSONResponse(s.state(), headers={"Cache-Control": "no-store"})

    def image(request: Request) -> Response:
        with s.lock:
            data = s.png(request.path_params["id"])
        if data is None:
            return Response("this image is not held any more: generate it again", status_code=404,
                            media_type="text/plain")
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=86400, immutable"})

    def media_file(request: Request) -> Response:
        held = s.media.get(request.path_params["id"])
        kind = request.path_params["kind"]
        if held is None or held[1] != ("image/gif" if kind == "gif" else "image/png"):
            return Response("this file is not held any more: make it again", status_code=404, media_type="text/plain")
        headers = {"Cache-Control": "private, max-age=86400, immutable"}
        name = request.query_params.get("download")
        if name is not None:
            safe = re.sub(r"[^\w.+-]", "_", name)[:80] or f"explore.{kind}"
            headers["Content-Disposition"] = f'attachment; filename="{safe}"'
        return Response(held[0], media_type=held[1], headers=headers)

    def download(text: str, name: str) -> Response:
        return Response(text, media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})

    def api(work: Callable[[dict], dict], max_body: int = MAX_JSON):
        """A POST endpoint: same-origin, a bounded JSON object, `work(body)` under the model lock."""

        async def endpoint(request: Request) -> Response:
            problem = same_origin_problem(request)
            if problem:
                return refuse(403, problem)
            body, refusal = await read_json_body(request, max_body, MAX_DEPTH)
            if refusal:
                return refusal
            if not isinstance(body, dict):
                return refuse(400, "send a JSON object")
            return await answer(work, body)

        return endpoint

    async def answer(work, *args) -> Response:
        def locked():
            with s.lock:
                return work(*args)

        try:
            return JSONResponse(await run_in_threadpool(locked))
        except BadRequest as e:
            return refuse(e.status, str(e))
        except ExploreError as e:  # what the run cannot do with this request: one line
            return refuse(400, str(e))
        except CurateError as e:  # the run folder cannot be written (disk full, read-only)
            return refuse(503, f"{e}; nothing was saved")

    # --- images ---
    def generate(body: dict) -> dict:
        seeds = parse_seeds(body.get("seeds", "0-7"), limit=MAX_SEEDS)
        psi = None if body.get("psi") is None else _number(body, "psi", 0, 2)
        return {"images": [s.show(explorer.from_seed(seed, psi), label=f"seed {seed}") for seed in seeds]}

    async def drop(request: Request) -> Response:
        problem = same_origin_problem(request)
        if problem:
            return refuse(403, problem)
        if request.headers.get("content-type", "").split(";")[0].strip() != "image/png":
            return refuse(415, "drop a PNG (Content-Type: image/png)")
        data, refusal = await read_body(request, MAX_PNG)
        if refusal:
            return refusal
        def bring_back() -> dict:
            found = read_png(data)
            explorer.check(found.latent)  # another run's latent: one line, before it is held
            return {"image": s.show(found.latent, found.edits, label="dropped")}

        return await answer(bring_back)

    def derive(body: dict) -> dict:
        i, latent, edits = s.moved(body)
        extra = body.get("edits") or []
        if not isinstance(extra, list) or len(extra) > 16:
            raise BadRequest("edits must be a list of at most 16 edits")
        added = [s.edit(e) for e in extra]
        label = "moved" if body.get("amounts") else "edited"
        return {"image": s.show(latent, [*edits, *added], label=label, parent=i)}

    # --- interpolation and animation ---
    def interpolate(body: dict) -> dict:
        _, a, _ = s.image(body.get("a"))
        _, b, _ = s.image(body.get("b"))
        frames = _number(body, "frames", 2, MAX_FRAMES, default=8, integer=True)
        space = body.get("space", "w")
        if space not in interp.SPACES:
            raise BadRequest('space must be "w" (lerp) or "z" (slerp)')
        images = explorer.render(interp.interpolate(explorer, a, b, frames, space))
        return {"strip": s.keep_media(media.strip_png(images), "png"),
                "gif": s.keep_media(media.gif_bytes(images), "gif"), "frames": frames}

    def animate(body: dict) -> dict:
        _, latent, edits = s.moved(body)
        edit = s.edit(body.get("edit"))
        frames = _number(body, "frames", 2, MAX_FRAMES, default=24, integer=True)
        k = _number(body, "k", -1000, 1000, default=edit.multiplier)
        images = edit_ops.animate(explorer, latent, edit, frames, k, others=edits)  # the image's own edits held
        return {"gif": s.keep_media(media.gif_bytes(images), "gif"), "frames": frames}

    # --- feature maps ---
    def feature_maps(body: dict) -> dict:
        i, latent, edits = s.image(body.get("id"))
        level = s.level(body)
        order = body.get("order", "index")
        if order not in ("index", "magnitude"):
            raise BadRequest('order must be "index" or "magnitude"')
        maps = s.feature_maps(i, latent, edits, level)
        sheet, layout = map_ops.map_tiles(maps, order=order)
        return {"sheet": s.keep_media(sheet, "png"), "layout": _plain(layout), "level": level,
                "shape": list(maps.shape)}

    def cell(body: dict) -> dict:
        i, latent, edits = s.image(body.get("id"))
        level = s.level(body)
        info = s.levels[level]
        x = _number(body, "x", 0, info["width"] - 1, integer=True)
        y = _number(body, "y", 0, info["height"] - 1, integer=True)
        n = min(info["channels"], _number(body, "n", 1, 4096, default=10, integer=True))
        maps = s.feature_maps(i, latent, edits, level)
        return {"x": x, "y": y, "channels": [[int(c), float(v)] for c, v in map_ops.cell_channels(maps, x, y, n)]}

    def find_channels(body: dict) -> dict:
        ids = body.get("ids")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 32:
            raise BadRequest("ids must be a list of 1 to 32 images")
        latents = [s.image(i)[1] for i in ids]
        level = s.level(body)
        n = min(s.levels[level]["channels"], _number(body, "n", 1, 4096, default=8, integer=True))
        found = edit_ops.find_channels(explorer, latents, level, s.region(body.get("region")), n=n)
        return {"channels": [int(c) for c in found]}

    # --- directions and edits saved beside the run ---
    def mark(body: dict) -> dict:
        name = _name(body)
        with_ = [s.image(i)[1] for i in _list(body, "with")]
        without = [s.image(i)[1] for i in _list(body, "without")]
        s.directions.save(dirs.from_marks(name, with_, without))
        return {"directions": s.direction_list()}

    def combine(body: dict) -> dict:
        name = _name(body)
        saved = s.saved_directions()
        parts = body.get("parts")
        if not isinstance(parts, list) or not parts or len(parts) > 32:
            raise BadRequest("parts must be a list of 1 to 32 [direction name, weight] pairs")
        steps = []
        for p in parts:
            if not isinstance(p, list) or len(p) != 2 or p[0] not in saved:
                raise BadRequest(f"{p!r} is not [a saved direction's name, weight]")
            steps.append((saved[p[0]], _number({"weight": p[1]}, "weight", -100, 100)))
        s.directions.save(dirs.combine(name, steps))
        return {"directions": s.direction_list()}

    def delete_direction(body: dict) -> dict:
        s.directions.delete(_name(body))
        return {"directions": s.direction_list()}

    def save_edit(body: dict) -> dict:
        edit = s.edit(body.get("edit"))
        if not edit.name:
            raise BadRequest("name the edit to save it")
        s.edit_store.save(edit)
        return {"edits": s.edit_list()}

    def delete_edit(body: dict) -> dict:
        s.edit_store.delete(_name(body))
        return {"edits": s.edit_list()}

    def importer(store, listing: Callable[[], list[dict]], key: str, check=None):
        async def endpoint(request: Request) -> Response:
            problem = same_origin_problem(request)
            if problem:
                return refuse(403, problem)
            data, refusal = await read_body(request, MAX_FILE)
            if refusal:
                return refusal
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError:
                return refuse(400, "the file is not UTF-8 text")
            return await answer(lambda: {"imported": store.import_json(text, check), key: listing()})

        return endpoint

    app = Starlette(routes=[
        Route("/", page),
        Route("/api/state", api_state),
        Route("/img/{id:int}.png", image),
        Route("/media/{id:int}.{kind:str}", media_file),
        Route("/api/generate", api(generate), methods=["POST"]),
        Route("/api/drop", drop, methods=["POST"]),
        Route("/api/derive", api(derive), methods=["POST"]),
        Route("/api/interpolate", api(interpolate), methods=["POST"]),
        Route("/api/animate", api(animate), methods=["POST"]),
        Route("/api/maps", api(feature_maps), methods=["POST"]),
        Route("/api/cell", api(cell), methods=["POST"]),
        Route("/api/find-channels", api(find_channels), methods=["POST"]),
        Route("/api/directions/mark", api(mark), methods=["POST"]),
        Route("/api/directions/combine", api(combine), methods=["POST"]),
        Route("/api/directions/delete", api(delete_direction), methods=["POST"]),
        Route("/api/directions/import", importer(s.directions, s.direction_list, "directions",
                                                           lambda d: d.fit(explorer)), methods=["POST"]),
        Route("/api/directions/export", lambda r: download(s.directions.export_json(), "directions.json")),
        Route("/api/edits/save", api(save_edit), methods=["POST"]),
        Route("/api/edits/delete", api(delete_edit), methods=["POST"]),
        Route("/api/edits/import", importer(s.edit_store, s.edit_list, "edits", s.check_edit), methods=["POST"]),
        Route("/api/edits/export", lambda r: download(s.edit_store.export_json(), "edits.json")),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ])
    app.state.session = s
    return HostCheck(app, allowed_hosts)


def _list(body: dict, key: str) -> list:
    v = body.get(key)
    if not isinstance(v, list) or len(v) > 256:
        raise BadRequest(f"{key} must be a list of image ids")
    return v


def _plain(v: Any) -> Any:
    """A layout dict as JSON can take it (NumPy numbers and arrays to Python's)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v
