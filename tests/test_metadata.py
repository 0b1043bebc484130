from __future__ import annotations

import gzip
import json

import pytest

from curate.filter.metadata import (BadLine, FieldError, InputError, InputProblem, Post, decode_line, decode_post,
                             expand_inputs, image_path, open_blocks, parse_timestamp, TagNamePattern)

# The real line from FORMATS.md (post 263162), tag list shortened as there.
REAL_2018 = (
    '{"id":"263162","created_at":"2008-06-10 03:08:07.34205 UTC","uploader_id":"65792","score":"1","source":"",'
    '"md5":"9a0f9e0f08907d12b7d08e46047ae4d8","last_commented_at":"1970-01-01 00:00:00 UTC","rating":"s",'
    '"image_width":"797","image_height":"794","is_note_locked":false,"file_ext":"jpg",'
    '"last_noted_at":"1970-01-01 00:00:00 UTC","is_rating_locked":false,"parent_id":"0","has_children":false,'
    '"approver_id":"1309","file_size":"110256","is_status_locked":false,"up_score":"1","down_score":"0",'
    '"is_pending":false,"is_flagged":false,"is_deleted":false,"updated_at":"2016-04-23 14:32:09.52181 UTC",'
    '"is_banned":false,"pixiv_id":"0","tags":[{"id":"540830","name":"1boy","category":"0"},'
    '{"id":"470575","name":"1girl","category":"0"},{"id":"16751","name":"bangs","category":"0"},'
    '{"id":"13197","name":"long_hair","category":"0"},{"id":"15189","name":"vampire_princess_miyu","category":"3"},'
    '{"id":"89189","name":"yellow_eyes","category":"0"}],"pools":[],"favs":["15115","159766","23892"]}'
)

API = {
    "id": 263162, "created_at": "2008-06-10T03:08:07.342-04:00", "rating": "g", "image_width": 797,
    "image_height": 794, "fav_count": 3, "score": 1, "file_ext": "png", "is_deleted": False, "is_banned": True,
    "tag_string": "1girl hakurei_reimu touhou", "tag_string_general": "1girl", "tag_string_character": "hakurei_reimu",
    "tag_string_copyright": "touhou", "tag_string_artist": "", "tag_string_meta": "",
}


def test_real_2018_line_decodes():
    post = decode_line(REAL_2018.encode())
    assert isinstance(post, Post)
    assert (post.id, post.width, post.height, post.favs, post.score) == (263162, 797, 794, 3, 1)
    assert post.rating == "s" and post.file_ext == "jpg" and not post.deleted
    assert post.tags()["copyright"] == ["vampire_princess_miyu"]
    assert post.tags()["general"] == ["1boy", "1girl", "bangs", "long_hair", "yellow_eyes"]
    assert post.created_at == parse_timestamp("2008-06-10T03:08:07.342050+00:00")


def test_api_line_decodes_typed_values_and_tag_strings():
    post = decode_line(json.dumps(API).encode())
    assert isinstance(post, Post)
    assert (post.id, post.favs, post.rating, post.file_ext, post.banned) == (263162, 3, "g", "png", True)
    assert post.tags()["character"] == ["hakurei_reimu"] and post.tags()["copyright"] == ["touhou"]
    # -04:00 local time is 07:08:07.342 UTC
    assert post.created_at == parse_timestamp("2008-06-10 07:08:07.342 UTC")


def test_api_line_with_only_tag_string():
    line = {k: v for k, v in API.items() if not k.startswith("tag_string_")}
    post = decode_line(json.dumps(line).encode())
    assert isinstance(post, Post) and post.tag_names() == {"1girl", "hakurei_reimu", "touhou"}


@pytest.mark.parametrize(
    "line, reason",
    [
        (b'{"id":"1", "created_at": ', "malformed_json"),
        (b"not json at all", "malformed_json"),
        (b"[1, 2, 3]", "wrong_type"),
        (REAL_2018.replace('"favs":["15115","159766","23892"]', '"favs":{"n":3}').encode(), "wrong_type"),
        (REAL_2018.replace('"created_at"', '"made_at"').encode(), "missing_field"),
        (REAL_2018.replace('"id":"263162",', "").encode(), "missing_field"),
        (REAL_2018.replace('"image_width":"797"', '"image_width":"wide"').encode(), "bad_value"),
        (REAL_2018.replace("2008-06-10 03:08:07.34205 UTC", "yesterday").encode(), "bad_value"),
        (REAL_2018[: len(REAL_2018) // 2].encode(), "malformed_json"),
    ],
)
def test_bad_lines_get_a_reason(line, reason):
    # decode_post checks every field now; the filter reads lazily but gives the same reasons
    with pytest.raises(FieldError) as e:
        decode_post(line)
    assert e.value.reason == reason and e.value.detail


def test_timestamps_both_forms():
    assert parse_timestamp("1970-01-01 00:00:00 UTC") == 0
    assert parse_timestamp("1970-01-01T00:00:01.5+00:00") == 1_500_000
    assert parse_timestamp("2018-01-01") == parse_timestamp("2018-01-01 00:00:00 UTC")


def test_image_path_is_danbooru_layout():
    assert image_path(263162, "jpg") == "original/0162/263162.jpg"
    assert image_path(7, "png") == "original/0007/7.png"


def test_expand_inputs_finds_metadata_in_dump_root(tmp_path):
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "2018000000000000").write_text("{}\n")
    (tmp_path / "metadata" / "posts000.json.gz").write_bytes(gzip.compress(b"{}\n"))
    (tmp_path / "metadata" / "README.txt").write_text("not metadata")
    (tmp_path / "original").mkdir()
    names = [p.name for p in expand_inputs([tmp_path])]
    assert names == ["2018000000000000", "posts000.json.gz"]
    with pytest.raises(InputError, match="no such file"):
        expand_inputs([tmp_path / "missing"])


def test_plain_blocks_cover_every_line_once(tmp_path):
    lines = [json.dumps({"n": i, "pad": "x" * (i % 50)}) for i in range(500)]
    f = tmp_path / "m.json"
    f.write_text("\n".join(lines) + "\n")
    problems: list[InputProblem] = []
    total, blocks = open_blocks([f], problems, block_bytes=997)
    got = [l for b in blocks for l in b.read().split(b"\n") if l]
    assert total == f.stat().st_size and [json.loads(l)["n"] for l in got] == list(range(500))
    assert not problems


def test_truncated_gzip_is_a_problem_not_a_crash(tmp_path):
    data = gzip.compress(("\n".join(json.dumps({"n": i}) for i in range(5000)) + "\n").encode())
    f = tmp_path / "cut.json.gz"
    f.write_bytes(data[: len(data) // 2])
    problems: list[InputProblem] = []
    _, blocks = open_blocks([f], problems, block_bytes=4096)
    got = [l for b in blocks for l in b.read().split(b"\n") if l]
    assert 0 < len(got) < 5000
    assert [p.reason for p in problems] == ["truncated_or_corrupt"]


def test_malformed_tags_surface_when_a_rule_needs_them():
    # tags are decoded lazily (most posts fall to cheaper rules first), so the line decodes...
    post = decode_line(REAL_2018.replace('"tags":[', '"tags":"oops","x":[').encode())
    assert isinstance(post, Post)
    # ...and the filter counts it as a bad line when the tag rules look
    from curate.filter.runner import FilterRules, filter_block
    from curate.filter.metadata import Block

    line = REAL_2018.replace('"tags":[', '"tags":"oops","x":[').encode() + b"\n"
    res = filter_block(Block("m", 0, len(line), data=line), FilterRules(ratings=frozenset("s")))
    assert isinstance(decode_line(b"{}"), BadLine)
    assert res.bad == {"wrong_type": 1} and res.posts == 0 and res.bad_samples[0][1] == "wrong_type"


def test_favs_count_matches_a_full_decode():
    from curate.filter.metadata import _count_favs

    for raw in (b"[]", b'["1"]', b'["15115","159766","23892"]', b'[ "1" , "2" ]', b'["a,b","c"]'):
        assert _count_favs(raw) == len(json.loads(raw))


def test_has_any_tag_on_raw_bytes_agrees_with_decoding_the_names():
    import random

    excluded = frozenset({"nude", "comic", "from_side", "upside-down", "a.b", "tag(x)"})
    pattern = TagNamePattern(excluded)
    pool = sorted(excluded) + ["nude_filter", "semi-nude", "comics", "comic_", "from_side_", "from",
                               "aXb", "tag(x)s", "solo", "1girl", "name", "cat\u00e9gorie"]
    rng = random.Random(5)
    seen = {True: 0, False: 0}
    for case in range(600):
        names = rng.sample(pool, rng.randint(0, 6))
        sep = rng.choice([":", ": ", " : ", ":\t", ":\r\n "])
        escape = case % 5 == 0  # some names written with JSON escapes, which hide them from a byte search
        objs = []
        for n in names:
            text = "".join(f"\\u{ord(c):04x}" for c in n) if escape else json.dumps(n, ensure_ascii=False)[1:-1]
            objs.append(f'{{"id":"{rng.randint(1, 9)}","name"{sep}"{text}","category":"0"}}')
        line = json.dumps({"id": "1", "created_at": "2018-01-01 00:00:00 UTC", "rating": "s", "image_width": "600",
                           "image_height": "900", "file_ext": "jpg", "favs": []})
        line = line[:-1] + ', "tags": [' + ",".join(objs) + "]}"
        post = decode_line(line.encode())
        want = not excluded.isdisjoint(post.tag_names())
        assert set(post.tag_names()) == set(names)
        assert post.has_any_tag(excluded, pattern) is want, line
        seen[want] += 1
    assert min(seen.values()) > 100  # both answers were exercised


def test_tag_trie_matches_exactly_its_words():
    import random
    import re

    from curate.filter.metadata import _trie

    rng = random.Random(3)
    alphabet = "ab_.(-"
    for _ in range(200):
        words = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))).encode()
                        for _ in range(rng.randint(1, 8))})
        pattern = re.compile(b"(?:" + _trie(words) + b")")
        for _ in range(30):
            probe = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))).encode()
            assert (pattern.fullmatch(probe) is not None) == (probe in words)
        assert all(pattern.fullmatch(w) for w in words)
