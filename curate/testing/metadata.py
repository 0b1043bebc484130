"""Seeded synthetic Danbooru metadata in both generations, for tests and benchmarks.

Field names, types and sizes follow FORMATS.md: the 2017-2020 export writes every number as a string,
favorites as a list of user ids and tags as objects; the 2021+/API form has typed values, `fav_count`
and space-separated `tag_string_*`. Values are drawn from skewed distributions shaped like the real
dump (most posts have few favorites, a few have hundreds; ~30 tags a post) so that parse cost and
filter selectivity are realistic. Nothing here is real Danbooru data.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import datetime, timedelta, timezone
from typing import Iterator

# A small vocabulary: enough variety that tag lists look real; the filter's default exclusions
# appear at realistic rates so the funnel has something to remove.
GENERAL = (
    "1girl solo long_hair smile looking_at_viewer blush short_hair open_mouth bangs blue_eyes "
    "simple_background blonde_hair brown_hair black_hair red_eyes skirt hat dress thighhighs "
    "white_background school_uniform bow gloves ribbon twintails upper_body standing sitting "
    "1boy holding jewelry full_body hair_ornament long_sleeves green_eyes closed_eyes multiple_girls "
    "2girls weapon purple_eyes animal_ears jacket shirt frills silver_hair yellow_eyes pink_hair "
    "lying on_side from_side monochrome greyscale comic 4koma sketch nude nipples cleavage "
    "upside-down from_behind underwear panties swimsuit bikini"
).split()
CHARACTER = "hakurei_reimu kirisame_marisa hatsune_miku remilia_scarlet izayoi_sakuya saber".split()
COPYRIGHT = "touhou vocaloid fate/stay_night original kantai_collection idolmaster".split()
ARTIST = [f"artist_{i}" for i in range(40)]
META = "highres absurdres translated commentary_request".split()
CATEGORY_CODE = {"general": "0", "artist": "1", "copyright": "3", "character": "4", "meta": "5"}

EPOCH_2005 = datetime(2005, 5, 24, tzinfo=timezone.utc)
SPAN_2018 = (datetime(2018, 12, 31, tzinfo=timezone.utc) - EPOCH_2005).total_seconds()


def _zipf_pick(rng: random.Random, words: list[str], k: int) -> list[str]:
    """k distinct words, earlier words far more likely (real tag frequencies are Zipf-like).

    Weighted sampling without replacement by Efraimidis-Spirakis keys: one draw per word.
    """
    keys = sorted(range(len(words)), key=lambda i: rng.random() ** (i + 1))
    return sorted(words[i] for i in keys[-min(k, len(words)):])


def _tags(rng: random.Random) -> dict[str, list[str]]:
    return {
        "general": _zipf_pick(rng, GENERAL, rng.randint(8, 40)),
        "character": _zipf_pick(rng, CHARACTER, rng.choice((0, 1, 1, 2))),
        "copyright": _zipf_pick(rng, COPYRIGHT, rng.choice((1, 1, 2))),
        "artist": _zipf_pick(rng, ARTIST, 1),
        "meta": _zipf_pick(rng, META, rng.randint(0, 3)),
    }


# Stable tag ids (hash() of a str is salted per process, so it would make output irreproducible).
TAG_ID = {name: str(1000 + i) for i, name in enumerate(GENERAL + CHARACTER + COPYRIGHT + ARTIST + META)}


def _common(rng: random.Random, post_id: int) -> dict:
    ext = rng.choices(("jpg", "png", "gif", "zip", "webm", "swf"), (75, 20, 2, 1, 1.5, 0.5))[0]
    width = rng.choice((600, 700, 800, 850, 1000, 1200, 1280, 1448, 1600, 2000, 2480, 3000))
    height = int(width * rng.choice((0.5, 0.75, 1.0, 1.333, 1.414, 1.5, 2.0)))
    created = EPOCH_2005 + timedelta(seconds=rng.random() * SPAN_2018)
    favs = int(rng.lognormvariate(1.5, 1.5)) if rng.random() > 0.25 else 0
    return {
        "id": post_id,
        "created": created,
        "rating": rng.choices("sqe", (75, 17, 8))[0],
        "width": width,
        "height": height,
        "ext": ext,
        "favs": min(favs, 3000),
        "score": max(0, int(favs * rng.uniform(0.3, 0.9)) + rng.randint(-2, 3)),
        "deleted": rng.random() < 0.05,
        "banned": rng.random() < 0.005,
        "tags": _tags(rng),
        "md5": hashlib.md5(str(post_id).encode()).hexdigest(),
    }


def _ts2018(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 10:05d} UTC"


def post_2018(rng: random.Random, post_id: int) -> dict:
    """One post in the Danbooru2017-2020 export form (every number a string)."""
    c = _common(rng, post_id)
    tags = [
        {"id": TAG_ID[name], "name": name, "category": CATEGORY_CODE[cat]}
        for cat, names in c["tags"].items()
        for name in names
    ]
    tags.sort(key=lambda t: t["name"])
    return {
        "id": str(post_id), "created_at": _ts2018(c["created"]),
        "uploader_id": str(rng.randint(1, 600000)), "score": str(c["score"]),
        "source": rng.choice(("", f"https://www.pixiv.net/member_illust.php?mode=medium&illust_id={rng.randint(10**7, 10**8)}")),
        "md5": c["md5"], "last_commented_at": "1970-01-01 00:00:00 UTC", "rating": c["rating"],
        "image_width": str(c["width"]), "image_height": str(c["height"]), "is_note_locked": False,
        "file_ext": c["ext"], "last_noted_at": "1970-01-01 00:00:00 UTC", "is_rating_locked": False,
        "parent_id": "0", "has_children": False, "approver_id": str(rng.randint(0, 500000)),
        "file_size": str(rng.randint(50_000, 9_000_000)), "is_status_locked": False,
        "up_score": str(c["score"]), "down_score": "0", "is_pending": False, "is_flagged": False,
        "is_deleted": c["deleted"], "updated_at": _ts2018(c["created"] + timedelta(days=30)),
        "is_banned": c["banned"], "pixiv_id": "0", "tags": tags, "pools": [],
        "favs": [str(rng.randint(1, 600000)) for _ in range(c["favs"])],
    }


def post_api(rng: random.Random, post_id: int) -> dict:
    """One post in the Danbooru 2021+/API form (typed values, tag strings, new ratings)."""
    c = _common(rng, post_id)
    rating = {"s": rng.choice("gs"), "q": "q", "e": "e"}[c["rating"]]
    local = c["created"].astimezone(timezone(timedelta(hours=-4)))
    t = c["tags"]
    return {
        "id": post_id, "created_at": local.isoformat(timespec="milliseconds"),
        "uploader_id": rng.randint(1, 600000), "score": c["score"], "source": "",
        "md5": c["md5"], "rating": rating, "image_width": c["width"], "image_height": c["height"],
        "tag_string": " ".join(sorted(n for names in t.values() for n in names)),
        "fav_count": c["favs"], "file_ext": c["ext"], "parent_id": None, "has_children": False,
        "is_deleted": c["deleted"], "is_banned": c["banned"], "is_pending": False, "is_flagged": False,
        "up_score": c["score"], "down_score": 0,
        "tag_string_general": " ".join(t["general"]), "tag_string_character": " ".join(t["character"]),
        "tag_string_copyright": " ".join(t["copyright"]), "tag_string_artist": " ".join(t["artist"]),
        "tag_string_meta": " ".join(t["meta"]),
        "file_url": f"https://cdn.donmai.us/original/{c['md5'][:2]}/{c['md5'][2:4]}/{c['md5']}.{c['ext']}",
    }


def metadata_lines(n: int, seed: int = 0, generation: str = "2018", first_id: int = 1000) -> Iterator[str]:
    """n JSON lines (no newline) of seeded posts; generation is '2018', 'api' or 'mixed'."""
    rng = random.Random(seed)
    for i in range(n):
        gen = generation if generation != "mixed" else ("2018" if i % 2 == 0 else "api")
        make = post_2018 if gen == "2018" else post_api
        yield json.dumps(make(rng, first_id + i), separators=(",", ":"))


def with_copies_and_families(lines: list[str], seed: int = 0) -> list[str]:
    """`lines` with same-picture copies and variant groups written into some posts (both generations).

    About one post in 12 takes an earlier post's md5 (a re-upload of the same file); in API-form
    lines, pixel hashes are set (some at the top level, some inside media_asset) and one in 12
    shares an earlier one's; one in 6 becomes a child of an earlier post (a variant group).
    """
    rng = random.Random(seed)
    out, earlier = [], []
    for line in lines:
        try:
            p = json.loads(line)
            post_id = int(p["id"])
        except (ValueError, KeyError, TypeError):
            out.append(line)
            continue
        api = not isinstance(p["id"], str)
        if earlier and rng.random() < 1 / 12:
            p["md5"] = rng.choice(earlier)["md5"]
        if api:
            donor = rng.choice(earlier) if earlier and rng.random() < 1 / 12 else None
            pixels = donor.get("_pixels") if donor else None
            pixels = pixels or hashlib.sha256(f"pixels{post_id}".encode()).hexdigest()
            p["_pixels"] = pixels
            if rng.random() < 0.5:
                p["pixel_hash"] = pixels
            else:
                p["media_asset"] = {"id": post_id, "md5": p["md5"], "pixel_hash": pixels, "variants": []}
        if earlier and rng.random() < 1 / 6:
            parent = int(rng.choice(earlier[-30:])["id"])
            p["parent_id"] = parent if api else str(parent)
        earlier.append(p)
        out.append(json.dumps({k: v for k, v in p.items() if k != "_pixels"}, separators=(",", ":")))
    return out


def naive_filter_ids(lines, rules) -> list[int]:
    """Ids kept by `rules`, computed the plain way: stdlib json, one line at a time, no tricks.

    This is the benchmark's baseline (what existing tools such as danbooru-utility do) and the
    tests' independent oracle for curate.filter.runner. It covers the rules decidable per post plus the
    age window (needing a second look at the kept posts), duplicate ids, duplicate files (md5, then
    pixel_hash) and --one-per-family; not --dataset-root.
    """
    from curate.filter.metadata import parse_timestamp

    candidates = []
    newest = None
    for line in lines:
        try:
            p = json.loads(line)
            created = parse_timestamp(p["created_at"])
            favs = len(p["favs"]) if "favs" in p else int(p["fav_count"])
            width, height, pid = int(p["image_width"]), int(p["image_height"]), int(p["id"])
            score = int(p.get("score", 0))
            rating = p["rating"]
            if "tags" in p:
                names = {t["name"] for t in p["tags"]}
            else:
                names = set(" ".join(p.get(f"tag_string_{c}", "") or "" for c in
                                     ("general", "character", "copyright", "artist", "meta")).split())
                if not names:
                    names = set((p.get("tag_string") or "").split())
        except (ValueError, KeyError, TypeError):
            continue
        newest = created if newest is None or created > newest else newest
        if rules.drop_deleted and p.get("is_deleted"):
            continue
        if rules.drop_banned and p.get("is_banned"):
            continue
        if (p.get("file_ext") or "").lower() not in rules.exts or rating not in rules.ratings:
            continue
        if height < rules.min_height or width < rules.min_width or favs < rules.min_favs:
            continue
        if rules.min_score is not None and score < rules.min_score:
            continue
        if rules.since is not None and created < rules.since:
            continue
        if rules.until is not None and created >= rules.until:
            continue
        if not rules.require_tags <= names or (rules.any_tags and not rules.any_tags & names):
            continue
        if rules.exclude_tags & names:
            continue
        parent = int(p.get("parent_id") or 0)
        pixels = p.get("pixel_hash") or (p.get("media_asset") or {}).get("pixel_hash")
        candidates.append((pid, created, p.get("md5"), pixels, parent, favs))
    cutoff = rules.age_cutoff(newest)
    seen, md5s, pixel_hashes, kept = set(), set(), set(), []
    for pid, created, md5, pixels, parent, favs in candidates:
        if (cutoff is not None and created < cutoff) or pid in seen:
            continue
        seen.add(pid)
        if md5 and md5 in md5s:
            continue
        md5s.add(md5)
        if pixels and pixels in pixel_hashes:
            continue
        pixel_hashes.add(pixels)
        kept.append((pid, parent, favs))
    if rules.one_per_family:
        best: dict[int, tuple[int, int]] = {}
        for pid, parent, favs in kept:
            family = parent or pid
            if family not in best or (favs, -pid) > best[family]:
                best[family] = (favs, -pid)
        return [pid for pid, parent, favs in kept if best[parent or pid] == (favs, -pid)]
    return [pid for pid, _, _ in kept]
