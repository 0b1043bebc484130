"""`curate report` on a generated workdir: the page's structure, escaping and inline pictures."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser

from PIL import Image

from curate.report.build import build
from curate.testing.review import make_review_workdir


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells: list[list[str]] = []
        self.images: list[dict[str, str]] = []
        self._td: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.cells.append([])
        elif tag == "td":
            self._td = []
        elif tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag == "td" and self._td is not None:
            self.cells[-1].append("".join(self._td))
            self._td = None

    def handle_data(self, data):
        if self._td is not None:
            self._td.append(data)


def test_report_page_is_self_contained_escaped_and_shows_every_stage(tmp_path):
    wd = make_review_workdir(tmp_path / "a<b&c", n=24, unscored=2)
    (wd.root / "crops.stats.json").write_text(json.dumps({
        "images_with_faces": 20, "crops": 24, "decode_failures": {"corrupt": 2}, "no_face": 3,
        "rejected_faces": {"too_small": 4}, "over_max_faces": 0}))
    text = build(wd.root, samples=6).read_text()
    assert "<b&c" not in text and "a&lt;b&amp;c" in text  # autoescaped
    assert not re.search(r"(src|href)=[\"'](?!data:)", text)  # every picture inline
    page = _Page()
    page.feed(text)
    rows = [r for r in page.cells if r]
    assert [r[1] for r in rows] == ["images with a face", "portrait crops"]
    assert rows[0] == ["crop", "images with a face", "20", "no face 3, corrupt 2"]
    assert rows[1][3] == "too_small 4"
    alts = [im["alt"] for im in page.images]
    assert alts[:2] == ["The funnel", "Face sizes"] and "Kept crops" in alts
    for im in page.images:
        data = base64.b64decode(im["src"].split(",", 1)[1])
        assert Image.open(io.BytesIO(data)).format == "PNG"


def test_report_of_an_empty_workdir_says_nothing_ran(tmp_path):
    (tmp_path / "w").mkdir()
    text = build(tmp_path / "w").read_text()
    assert "No stage has run in this workdir yet." in text and "<img" not in text


def test_report_shows_the_near_duplicates_removed_and_a_sheet_of_their_groups(tmp_path):
    from curate.dedup.runner import run_dedup
    from test_dedup import make_workdir, many

    wd = make_workdir(tmp_path / "w", many(9))  # three pictures each with a JPEG copy
    run_dedup(wd, workers=1, progress=False)
    page = _Page()
    page.feed(build(wd.root, samples=12).read_text())
    rows = [r for r in page.cells if r]
    assert ["dedup", "crops that are no near-duplicate (threshold 10)", "6", "near_duplicate 3"] in rows
    sheet = next(im for im in page.images if im["alt"].startswith("Near-duplicate groups"))
    grid = Image.open(io.BytesIO(base64.b64decode(sheet["src"].split(",", 1)[1])))
    assert grid.height > 3 * 128 > grid.height / 2  # three rows: one group each
