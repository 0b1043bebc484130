"""The five engine-neutral units: they import from their packages, pickle, and run in a spawned process.

A `spawn` worker is a fresh interpreter: a unit that leaned on state inherited through fork or on a
module-global registry filled by the parent fails here. Each unit also gets a bad item, for which it
returns a reason instead of raising.
"""

from __future__ import annotations

import io
import multiprocessing
import pickle
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import shared_memory
from pathlib import Path

import pytest
from PIL import Image

from curate.core.pool import ordered_map
from curate.crop import CropConfig, Cropper, Source
from curate.crop.cascades import ANIMEFACE_FILE, CASCADE_DIR, sha256_of
from curate.dataset import RecordEncoder
from curate.dataset import schema as R
from curate.dataset.pack import SlotEncoder, slot_bytes
from curate.dedup import CropHasher
from curate.filter import FilterRules, PostFilter
from curate.score import CropScorer
from curate.testing.metadata import metadata_lines

GOOD_SOURCE = Path("original") / "0266" / "2142266.jpg"  # a clear, centred face (tests/test_crop.py)
SIZES = tuple(R.level_sizes(512, 256))


@pytest.fixture(scope="module")
def spawned():
    """One worker process started with `spawn`: nothing in it comes from this process's memory."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        yield ex


def roundtrip(unit):
    return pickle.loads(pickle.dumps(unit))


def crop_png(seed: int = 0) -> bytes:
    """A 512x256 (height x width) drawn-looking PNG crop (curate.testing.images.textured)."""
    from curate.testing.images import textured

    img = textured(seed)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def test_package_inits_are_light():
    code = ("import sys, curate.filter, curate.crop, curate.score, curate.dedup, curate.dataset; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_post_filter_in_a_spawned_process(spawned):
    rules = FilterRules(exclude_tags=frozenset(), ratings=frozenset("gsqe"), min_height=0, min_width=0,
                        exts=frozenset({"jpg", "jpeg", "png", "gif", "webp"}), drop_deleted=False, drop_banned=False)
    unit = roundtrip(PostFilter(rules))
    line = next(metadata_lines(1, seed=3)).encode()
    row, reason, _ = spawned.submit(unit, line).result()
    assert reason is None and row["id"] == 1000 and row["path"].endswith(f"1000.{row['file_ext']}")
    assert len(row["tag_names"]) == len(row["tag_codes"]) > 0
    assert spawned.submit(unit, b"{not json").result()[:2] == (None, "malformed_json")
    assert spawned.submit(unit, b"  ").result()[:2] == (None, "blank")
    strict = PostFilter(FilterRules(min_favs=10**9))
    assert strict(line)[:2] == (None, "favs")  # the first rule that removed it


def test_crop_hasher_in_a_spawned_process(spawned):
    unit = roundtrip(CropHasher(mirror=True))
    here = unit(crop_png(5))
    there = spawned.submit(unit, crop_png(5)).result()
    assert there == here and there[2] is None and there[1] is not None
    assert spawned.submit(unit, b"GIF89a broken").result()[2] in ("truncated", "corrupt", "not_an_image")
    buf = io.BytesIO()
    Image.new("RGB", (256, 512), "white").save(buf, "PNG")
    assert spawned.submit(unit, buf.getvalue()).result()[2] == "flat"


def test_cropper_in_a_spawned_process(spawned, sample_root):
    cascade = CASCADE_DIR / ANIMEFACE_FILE
    if not cascade.is_file():
        pytest.skip(f"{cascade} is not fetched; run 'make cascades'")
    unit = roundtrip(Cropper(CropConfig(cascade=str(cascade), cascade_sha256=sha256_of(cascade)), overlays=True))
    path = sample_root / GOOD_SOURCE
    src = Source(str(path), GOOD_SOURCE.name, "2142266", 2142266)
    res = spawned.submit(unit, src, path.read_bytes()).result()
    assert res.reason is None and len(res.rows) == len(res.crops) >= 1
    assert res.rows[0]["crop_id"] == "2142266_0" and res.rows[0]["post_id"] == 2142266
    with Image.open(io.BytesIO(res.crops[0])) as im:
        assert im.format == "PNG" and im.size == (256, 512)
    assert res.overlay and res.overlay[:2] == b"\xff\xd8"  # the overlay comes back as JPEG bytes
    bad = spawned.submit(unit, Source("nowhere.jpg", "junk.jpg", "junk"), b"<html>not a picture</html>").result()
    assert bad.reason == "not_an_image" and bad.rows == [] and bad.crops == []


def test_cropper_with_both_detectors_in_a_spawned_process(spawned, sample_root):
    cascade = CASCADE_DIR / ANIMEFACE_FILE
    if not cascade.is_file():
        pytest.skip(f"{cascade} is not fetched; run 'make cascades'")
    unit = Cropper(CropConfig(cascade=str(cascade), cascade_sha256=sha256_of(cascade), detector="both"))
    path = sample_root / GOOD_SOURCE
    src = Source(str(path), GOOD_SOURCE.name, "2142266", 2142266)
    here = unit(src, path.read_bytes())  # libnvxs loaded here first: the handle must not travel
    unit = roundtrip(unit)
    there = spawned.submit(unit, src, path.read_bytes()).result()
    assert there.rows == here.rows and there.rows[0]["found_by"] == "both" and there.rows[0]["likelihood"] > 0.9
    assert there.crops == here.crops


def test_crop_scorer_heuristic_in_a_spawned_process(spawned):
    unit = roundtrip(CropScorer("heuristic", models_root="/nonexistent", threads=2))
    batch = [({"crop_id": "a_0", "confidence": 3.0}, crop_png(1)), ({"crop_id": "b_0", "confidence": 1.0}, b"junk")]
    table = spawned.submit(unit, batch).result()
    rows = {r["crop_id"]: r for r in table.to_pylist()}
    assert rows["a_0"]["error"] is None and rows["a_0"]["scorer"] == "heuristic" and rows["a_0"]["sharpness"] > 10
    assert rows["a_0"]["person"] is None and rows["a_0"]["confidence"] == 3.0
    assert rows["b_0"]["error"] == "not_an_image" and rows["b_0"]["contrast"] is None


def test_crop_scorer_loads_illustration2vec_lazily_in_a_spawned_process(spawned, tmp_path):
    from curate.score.models import install_illustration2vec
    from curate.testing.i2v import random_weights, write_caffemodel, write_tags

    write_caffemodel(tmp_path / "w.caffemodel", random_weights(16, seed=7))
    write_tags(tmp_path / "tag_list.json")
    install_illustration2vec(tmp_path / "w.caffemodel", tmp_path / "models", progress=False)
    unit = CropScorer("illustration2vec", models_root=tmp_path / "models", top_k=3)
    assert pickle.loads(pickle.dumps(unit))._net is None  # nothing loaded yet, nothing to carry
    batch = [({"crop_id": "a_0", "confidence": 1.0}, crop_png(2)), ({"crop_id": "b_0", "confidence": 1.0}, b"")]
    rows = spawned.submit(roundtrip(unit), batch).result().to_pylist()
    assert 0 <= rows[0]["person"] <= 1 and len(rows[0]["top_tags"]) == 3 and rows[0]["scorer"] == "illustration2vec"
    assert rows[1]["error"] == "empty_file" and rows[1]["person"] is None


def test_record_encoder_in_a_spawned_process(spawned):
    unit = roundtrip(RecordEncoder(SIZES))
    records, reason, _ = spawned.submit(unit, crop_png(3)).result()
    assert reason is None and [len(r) for r in records] == [R.record_size(h, w) for h, w in SIZES]
    top = R.decode_example(next(R.iter_records(io.BytesIO(records[0]))))
    assert top.shape == (3, 512, 256)
    assert spawned.submit(unit, b"junk").result()[:2] == (None, "not_an_image")
    small = io.BytesIO()
    Image.new("RGB", (16, 32)).save(small, "PNG")
    assert spawned.submit(unit, small.getvalue()).result()[1] == "wrong_size"


def test_packs_arena_works_under_spawn(tmp_path):
    # The local runner's shared-memory slots: spawned workers attach by name and frame the same records.
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Path(paths[-1]).write_bytes(crop_png(10 + i))
    n = slot_bytes(SIZES)
    arena = shared_memory.SharedMemory(create=True, size=4 * n)
    try:
        items = [(0, paths[:2]), (2, paths[2:] + [str(tmp_path / "gone.png")])]
        got = list(ordered_map(SlotEncoder(SIZES, arena.name), items, workers=2, start_method="spawn"))
        assert got == [[(None, ""), (None, "")], [(None, ""), ("missing_file", str(tmp_path / "gone.png"))]]
        for i, p in enumerate(paths):
            want, _, _ = RecordEncoder(SIZES)(Path(p).read_bytes())
            assert bytes(arena.buf[i * n:(i + 1) * n]) == b"".join(want)
    finally:
        arena.close()
        arena.unlink()
