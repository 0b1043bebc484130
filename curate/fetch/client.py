"""`curate fetch`: a small sample of posts from the Danbooru API, in the Danbooru dump layout.

Writes ROOT/metadata/posts-<page>.json (JSON lines in the API form, exactly as served) and
ROOT/original/<id % 1000, 4 digits>/<id>.<ext>, so `curate filter ROOT --dataset-root ROOT` reads it
like a local dump. Politely: a descriptive User-Agent, a request-rate limit, retries with exponential
backoff (honouring Retry-After), and md5 verification of every file. Resumable: pages and files are
written atomically and fetch.state.json records where paging stopped, so a rerun continues (or, when
complete, does nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from curate import __version__
from curate.core.atomic import write_bytes, write_json
from curate.filter.metadata import image_path
from curate.core.errors import CurateError
from curate.core.http import TRANSIENT, Client

DEFAULT_BASE_URL = "https://danbooru.donmai.us"
STILL_IMAGES = ("jpg", "jpeg", "png")


class FetchError(CurateError):
    """The API cannot be used at all (no network, refused, not Danbooru): a one-line user error."""

    exit_code = 1  # the request may be fine: the network or the site is not


@dataclass(frozen=True)
class FetchPlan:
    """What to fetch. Anonymous Danbooru searches allow two tags, the rating counting as one."""

    tags: str = "solo"
    rating: str | None = "g"
    limit: int = 300
    per_page: int = 100  # the API allows up to 200
    base_url: str = DEFAULT_BASE_URL

    def query(self) -> str:
        """The search string sent as `tags`."""
        return " ".join(filter(None, [self.tags.strip(), f"rating:{self.rating}" if self.rating else None]))


def _posts_url(plan: FetchPlan, page: str) -> str:
    params = {"tags": plan.query(), "limit": str(min(plan.per_page, 200)), "page": page}
    return f"{plan.base_url.rstrip('/')}/posts.json?{urllib.parse.urlencode(params)}"


def _state_path(root: Path) -> Path:
    return root / "fetch.state.json"


def _load_state(root: Path, plan: FetchPlan) -> dict[str, Any]:
    path = _state_path(root)
    if not path.exists():
        return {"plan": asdict(plan), "pages": 0, "posts": 0, "next_page": "1", "complete": False, "verified": []}
    state = json.loads(path.read_text())
    if state["plan"] != asdict(plan):
        raise FetchError(
            f"{root} holds a fetch with other settings ({state['plan']['tags']!r}, limit {state['plan']['limit']}); "
            "use another folder or the same options"
        )
    return state


def fetch(root: str | Path, plan: FetchPlan, client: Client | None = None, progress: bool = True) -> dict[str, Any]:
    """Fetch metadata pages, then files, into `root`; return (and save) the stats."""
    root = Path(root)
    client = client or Client()
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    state = _load_state(root, plan)

    # 1. metadata, page by page: newest first, then 'b<lowest id seen>' (ids below it) for stable paging
    with tqdm(total=plan.limit, initial=state["posts"], desc="fetch posts", unit="post", disable=not progress) as bar:
        while not state["complete"] and state["posts"] < plan.limit:
            url = _posts_url(plan, state["next_page"])
            try:
                body = client.get(url)
            except urllib.error.HTTPError as e:
                raise FetchError(f"{plan.base_url} answered {e.code} {e.reason} for {url}") from None
            except (urllib.error.URLError, *TRANSIENT) as e:
                reason = getattr(e, "reason", e)
                raise FetchError(
                    f"cannot reach {plan.base_url} ({reason}); without network, point curate at a local dump instead: "
                    "make dataset DANBOORU=/path/to/danbooru2018"
                ) from None
            try:
                posts = json.loads(body)
                assert isinstance(posts, list)
            except (ValueError, AssertionError):
                raise FetchError(f"{url} did not return a JSON list of posts; is {plan.base_url} a Danbooru?") from None
            posts = [p for p in posts if isinstance(p, dict) and isinstance(p.get("id"), int)]
            posts = posts[: plan.limit - state["posts"]]
            if posts:
                lines = "".join(json.dumps(p, separators=(",", ":")) + "\n" for p in posts)
                write_bytes(root / "metadata" / f"posts-{state['pages']:05d}.json", lines.encode())
                state["pages"] += 1
                state["posts"] += len(posts)
                state["next_page"] = f"b{min(p['id'] for p in posts)}"
                bar.update(len(posts))
            if not posts or len(posts) < min(plan.per_page, 200):
                state["complete"] = True  # the search has no more posts
            write_json(_state_path(root), state)
        if state["posts"] >= plan.limit:
            state["complete"] = True
            write_json(_state_path(root), state)

    # 2. files, verified by md5; what was verified is recorded so a rerun does not hash everything again
    posts = [json.loads(line) for f in sorted((root / "metadata").glob("posts-*.json")) for line in f.open()]
    verified = set(state["verified"])
    outcomes: Counter = Counter()
    for post in tqdm(posts, desc="fetch files", unit="file", disable=not progress):
        outcome = _fetch_file(root, post, client, verified)
        outcomes[outcome] += 1
        if outcome == "downloaded":
            state["verified"] = sorted(verified)
            write_json(_state_path(root), state)

    stats = {
        "stage": "fetch",
        "curate_version": __version__,
        "root": str(root),
        "plan": asdict(plan),
        "query": plan.query(),
        "posts": len(posts),
        "files": dict(sorted(outcomes.items())),
        "requests": client.requests,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(root / "fetch.stats.json", stats)
    return stats


def _fetch_file(root: Path, post: dict[str, Any], client: Client, verified: set[int]) -> str:
    """Download one post's original; returns what happened (a reason code, never raises)."""
    ext = str(post.get("file_ext", "")).lower()
    url, md5 = post.get("file_url"), post.get("md5")
    if ext not in STILL_IMAGES:
        return "not_a_still_image"
    if not url or not md5:
        return "no_file_url"  # restricted or removed posts carry no file address
    dest = root / image_path(post["id"], ext)
    if post["id"] in verified and dest.exists():
        return "already_present"
    part = dest.with_name(dest.name + ".part")  # a killed download resumes from here (HTTP Range)
    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        client.download(url, part)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not part.exists():  # 416: the part file is already whole; check it
            return "download_failed"
    except (urllib.error.URLError, *TRANSIENT):
        return "download_failed"
    with open(part, "rb") as f:
        digest = hashlib.file_digest(f, "md5").hexdigest()
    if digest != md5:
        part.unlink()
        return "md5_mismatch"
    os.replace(part, dest)
    verified.add(post["id"])
    return "downloaded"


def summary_line(stats: dict[str, Any]) -> str:
    """One line a person reads at the end."""
    files = ", ".join(f"{k} {v}" for k, v in stats["files"].items()) or "none"
    return (f"fetch: {stats['posts']} posts for {stats['query']!r}; files: {files}; "
            f"{stats['requests']} requests in {stats['seconds']:.0f}s -> {stats['root']}")
