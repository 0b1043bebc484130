"""curate dedup: the hash unit, the search against brute force, the grouping rule, incremental and
resumable runs, pack leaving near-duplicates out, and the sample's known pairs caught by a real run."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from curate.cli import cli
from curate.core.errors import InputError
from curate.core.workdir import CROPS_SCHEMA, DEDUP_SCHEMA, SCORES_SCHEMA, Workdir, surviving_crops
from curate.dedup import CropHasher, DedupConfig
from curate.dedup.phash import distance, grey_thumbnail, hash_bits
from curate.dedup.runner import run_dedup, state_root
from curate.dedup.search import brute_force_pairs, mih_pairs, near_pairs
from curate.testing.images import textured


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def jpeg(a: np.ndarray, quality: int = 70) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def flat(value, noise: int = 0, seed: int = 0) -> np.ndarray:
    a = np.full((128, 64, 3), value, np.int32)
    if noise:
        a = a + np.random.default_rng(seed).integers(-noise, noise + 1, a.shape)
    return a.clip(0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- unit

def test_a_crop_and_its_reencode_hash_close_and_distinct_crops_far():
    unit = CropHasher()
    a, b = textured(1, 128, 64), textured(2, 128, 64)
    ha, _, reason, _ = unit(png(a))
    assert reason is None and isinstance(ha, int) and -(1 << 63) <= ha < 1 << 63  # fits the int64 column
    hj, _, _, _ = unit(jpeg(a))
    hb, _, _, _ = unit(png(b))
    assert distance(ha, hj) <= DedupConfig().threshold < distance(ha, hb)


@pytest.mark.parametrize("picture", [flat(255), flat(0), flat((200, 30, 30)), flat(250, noise=3, seed=1),
                                     np.tile(np.linspace(120, 123, 64, dtype=np.uint8)[None, :, None], (128, 1, 3))],
                         ids=["white", "black", "red", "white-with-noise", "faint-gradient"])
def test_blank_and_near_uniform_crops_are_flat(picture):
    assert CropHasher()(png(picture)) == (None, None, "flat", "")


@pytest.mark.parametrize("data, reason", [(b"", "empty_file"), (b"not an image at all", "not_an_image"),
                                          (png(textured(3, 64, 32))[:200], "truncated")])
def test_a_bad_crop_is_a_reason_not_an_exception(data, reason):
    h, m, got, _ = CropHasher()(data)
    assert (h, m, got) == (None, None, reason)


def test_the_unit_pickles_and_hashes_the_mirror_on_request():
    unit = pickle.loads(pickle.dumps(CropHasher(mirror=True)))
    a = textured(4, 128, 64)
    h, m, _, _ = unit(png(a))
    hf, _, _, _ = unit(png(a[:, ::-1].copy()))
    assert m is not None and distance(m, hf) <= 2 and distance(h, hf) > DedupConfig().threshold


def test_the_hash_is_imagehash_phash_bit_for_bit():
    imagehash = pytest.importorskip("imagehash", reason="imagehash is not installed (bench comparison only)")
    for seed in range(5):
        im = Image.fromarray(textured(seed, 96, 48))
        assert hash_bits(grey_thumbnail(im)) == int(str(imagehash.phash(im)), 16)


# --------------------------------------------------------------------------------------------- search

def planted_hashes(n: int, seed: int) -> np.ndarray:
    """Random 64-bit hashes, one in five a copy of another with 0-12 bits flipped."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 1 << 63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    for i in rng.choice(n, n // 5, replace=False):
        x = h[rng.integers(0, n)]
        for b in rng.choice(64, rng.integers(0, 13), replace=False):
            x ^= np.uint64(1) << np.uint64(b)
        h[i] = x
    return h


@pytest.mark.parametrize("t", [0, 3, 6, 10, 12])
@pytest.mark.parametrize("chunks", [None, 3, 5])
def test_multi_index_search_finds_exactly_the_brute_force_pairs(t, chunks):
    h = planted_hashes(3000, seed=t)
    want = np.unique(brute_force_pairs(h, h, t, same=True), axis=0)
    got = mih_pairs(h, h, t, same=True, chunks=chunks)
    assert len(want) > 30 and np.array_equal(got, want)
    queries = h[:400]  # new crops against all of them: every (query, index) pair, itself included
    want = np.unique(brute_force_pairs(queries, h, t, same=False), axis=0)
    assert np.array_equal(mih_pairs(queries, h, t, same=False, chunks=chunks), want)
    assert np.array_equal(near_pairs(queries, h, t, same=False), want)


# ------------------------------------------------------------------------------------------- workdirs

def make_workdir(root: Path, pictures: dict[str, tuple[bytes, int]], person: dict[str, float] | None = None,
                 rejected: tuple[str, ...] = ()) -> Workdir:
    """crops.parquet + crop files: crop_id -> (file bytes, face side in source pixels); scores on request."""
    wd = Workdir(root)
    root.mkdir(parents=True, exist_ok=True)
    ids = list(pictures)
    for c, (data, _) in pictures.items():
        p = root / Workdir.crop_file(c)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    n = len(ids)
    cols = {f.name: pa.array([0] * n, f.type) for f in CROPS_SCHEMA if pa.types.is_integer(f.type)}
    cols.update({f.name: pa.array([1.0] * n, f.type) for f in CROPS_SCHEMA if pa.types.is_floating(f.type)})
    side = [pictures[c][1] for c in ids]
    cols.update(crop_id=pa.array(ids), post_id=pa.array(range(1, n + 1), pa.int64()), source=pa.array(["s"] * n),
                face_w=pa.array(side, pa.int32()), face_h=pa.array(side, pa.int32()),
                file=pa.array([Workdir.crop_file(c) for c in ids]))
    pq.write_table(pa.table(cols, schema=CROPS_SCHEMA), wd.crops_table)
    if person is not None:
        s = {f.name: [None] * n for f in SCORES_SCHEMA}
        s.update(crop_id=ids, scorer=["illustration2vec"] * n, kept=[c not in rejected for c in ids],
                 person=[person.get(c) for c in ids], reason=[("no_person" if c in rejected else None) for c in ids])
        pq.write_table(pa.table(s, schema=SCORES_SCHEMA), wd.scores_table)
    return wd


def rows(wd: Workdir) -> dict[str, dict]:
    table = pq.read_table(wd.dedup_table)
    assert table.schema.equals(DEDUP_SCHEMA)
    return {r["crop_id"]: r for r in table.to_pylist()}


def family(seed: int) -> tuple[np.ndarray, dict[str, bytes]]:
    a = textured(seed, 128, 64)
    shifted = np.pad(a, ((2, 0), (1, 0), (0, 0)), mode="edge")[:128, :64]
    return a, {"png": png(a), "jpeg": jpeg(a), "shift": png(shifted)}


def test_each_group_keeps_the_largest_face_and_blank_crops_stay_apart(tmp_path):
    _, a = family(10)
    _, b = family(11)
    pictures = {"a_small": (a["png"], 40), "a_big": (a["jpeg"], 90), "a_mid": (a["shift"], 60),
                "b_1": (b["png"], 50), "b_0": (b["jpeg"], 50),  # a tie on face size: crop_id decides
                "c": (png(textured(12, 128, 64)), 70),
                "white_1": (png(flat(255)), 80), "white_2": (png(flat(255)), 80), "white_3": (png(flat(254, 1)), 80),
                "broken": (b"\x89PNG\r\n\x1a\n", 80)}
    wd = make_workdir(tmp_path / "w", pictures)
    stats = run_dedup(wd, workers=1, progress=False)
    got = rows(wd)
    assert {c: (r["reason"], r["twin"]) for c, r in got.items() if r["reason"]} == {
        "a_small": ("near_duplicate", "a_big"), "a_mid": ("near_duplicate", "a_big"),
        "b_1": ("near_duplicate", "b_0"),
        "white_1": ("flat", None), "white_2": ("flat", None), "white_3": ("flat", None),
        "broken": ("not_an_image", None)}
    assert got["a_big"]["group"] == got["a_small"]["group"] == "a_big" and got["c"]["group"] is None
    assert all(got[c]["distance"] <= 10 for c in ("a_small", "a_mid", "b_1"))
    assert stats["near_duplicate"] == 3 and stats["groups"] == 2 and stats["kept"] == 7
    assert stats["not_compared"] == {"not_an_image": 1, "flat": 3}
    assert [c for c in surviving_crops(wd)[0].column("crop_id").to_pylist()] == [
        "a_big", "b_0", "c", "white_1", "white_2", "white_3", "broken"]


def test_scores_decide_after_the_face_and_a_rejected_crop_is_never_the_one_kept(tmp_path):
    _, a = family(20)
    _, b = family(21)
    pictures = {"a1": (a["png"], 50), "a2": (a["jpeg"], 50), "b1": (b["png"], 90), "b2": (b["jpeg"], 50)}
    wd = make_workdir(tmp_path / "w", pictures, person={"a1": 0.6, "a2": 0.9, "b1": 0.99, "b2": 0.7},
                      rejected=("b1",))
    run_dedup(wd, workers=1, progress=False)
    got = rows(wd)
    assert got["a1"]["twin"] == "a2" and got["a2"]["reason"] is None  # same face: the higher person score
    assert got["b1"]["twin"] == "b2" and got["b2"]["reason"] is None  # the bigger face was rejected by score


def test_mirror_copies_are_caught_only_with_mirror(tmp_path):
    a = textured(30, 128, 64)
    pictures = {"a": (png(a), 50), "a_flipped": (png(a[:, ::-1].copy()), 40), "b": (png(textured(31, 128, 64)), 50)}
    wd = make_workdir(tmp_path / "w", pictures)
    assert run_dedup(wd, workers=1, progress=False)["near_duplicate"] == 0
    stats = run_dedup(wd, DedupConfig(mirror=True), workers=1, progress=False)
    assert stats["near_duplicate"] == 1 and rows(wd)["a_flipped"]["twin"] == "a"


def many(n: int, start: int = 0) -> dict[str, tuple[bytes, int]]:
    """n crops: seeded pictures, every third one a JPEG copy of the one before."""
    out, last = {}, None
    for i in range(start, start + n):
        if i % 3 == 2 and last is not None:
            out[f"c{i:03d}"] = (jpeg(last), 30)
        else:
            last = textured(100 + i, 96, 48)
            out[f"c{i:03d}"] = (png(last), 40 + i)
    return out


def test_a_rerun_hashes_and_searches_only_new_crops_and_matches_a_fresh_run(tmp_path):
    first = many(9)
    wd = make_workdir(tmp_path / "w", first)
    s1 = run_dedup(wd, workers=2, chunk=4, progress=False)
    assert s1["hashed_now"] == 9 and s1["searched_now"] == 9
    more = {**first, **many(7, start=9), "c900": (jpeg(textured(100, 96, 48), 80), 10)}  # a copy of an old crop
    wd = make_workdir(tmp_path / "w", more)
    s2 = run_dedup(wd, workers=2, chunk=4, progress=False)
    assert s2["hashed_now"] == 8 and s2["searched_now"] == 8 and s2["hashes_reused"] == 9
    assert rows(wd)["c900"]["twin"] == "c000"
    fresh = make_workdir(tmp_path / "fresh", more)
    s3 = run_dedup(fresh, workers=1, progress=False)
    assert pq.read_table(wd.dedup_table).equals(pq.read_table(fresh.dedup_table))
    assert s2["pairs"] == s3["pairs"] and s2["near_duplicate"] == s3["near_duplicate"] > 5
    # nothing new: nothing written
    before = wd.dedup_table.stat().st_mtime_ns, wd.dedup_stats.read_bytes()
    s4 = run_dedup(wd, workers=2, progress=False)
    assert s4["up_to_date"] and (wd.dedup_table.stat().st_mtime_ns, wd.dedup_stats.read_bytes()) == before


def test_a_rewritten_crop_is_hashed_again(tmp_path):
    pictures = many(4)
    wd = make_workdir(tmp_path / "w", pictures)
    run_dedup(wd, workers=1, progress=False)
    assert rows(wd)["c002"]["twin"] == "c001"
    (wd.root / Workdir.crop_file("c002")).write_bytes(png(textured(555, 96, 48)))  # crop rerun with new pixels
    stats = run_dedup(wd, workers=1, progress=False)
    assert stats["hashed_now"] == 1 and rows(wd)["c002"]["reason"] is None


def test_a_killed_run_keeps_its_hashes_and_resumes(tmp_path):
    wd = make_workdir(tmp_path / "w", many(10))
    partial = run_dedup(wd, workers=1, chunk=3, progress=False, stop_after_chunks=2)
    assert not partial["complete"] and partial["hashed_now"] == 6 and not wd.dedup_table.exists()
    assert len(list(state_root(wd).rglob("part-*.parquet"))) == 2
    stats = run_dedup(wd, workers=1, chunk=3, progress=False)
    assert stats["complete"] and stats["hashed_now"] == 4 and stats["hashes_reused"] == 6
    assert not list(wd.root.glob("*.tmp*")) and not list(state_root(wd).rglob("part-*.parquet"))  # compacted


def test_pack_leaves_near_duplicates_out(tmp_path):
    from curate.dataset.pack import PackConfig, run_pack

    wd = make_workdir(tmp_path / "w", {k: (v[0], v[1]) for k, v in many(6).items()})
    # pack needs 512x256 crops: the pictures again at that size, so that their hashes stay the same pairs
    for c, r in zip(*(pq.read_table(wd.crops_table).column(n).to_pylist() for n in ("crop_id", "file"))):
        im = Image.open(wd.root / r).convert("RGB").resize((256, 512))
        buf = io.BytesIO()
        im.save(buf, "PNG")
        (wd.root / r).write_bytes(buf.getvalue())
    stats = run_dedup(wd, workers=1, progress=False)
    assert stats["near_duplicate"] == 2
    packed = run_pack(wd.root, tmp_path / "ds", PackConfig(name="t"), progress=False)
    assert packed["count"] == 4
    kept, counts = surviving_crops(wd)
    assert counts["removed_by_dedup"] == 2 and "c002" not in kept.column("crop_id").to_pylist()


def test_a_dedup_table_of_other_crops_stops_pack_in_one_line(tmp_path):
    wd = make_workdir(tmp_path / "w", many(3))
    run_dedup(wd, workers=1, progress=False)
    make_workdir(tmp_path / "w", many(5))  # crop ran again; dedup did not
    with pytest.raises(InputError, match="rerun 'curate dedup"):
        surviving_crops(wd)


def test_the_command_prints_one_summary_line_and_refuses_a_workdir_without_crops(tmp_path):
    wd = make_workdir(tmp_path / "w", many(4))
    r = CliRunner().invoke(cli, ["dedup", str(wd.root), "--no-progress", "-j", "1"])
    assert r.exit_code == 0, r.output
    assert r.output.count("\n") == 1 and "1 near-duplicates in 1 groups (threshold 10)" in r.output
    r = CliRunner().invoke(cli, ["dedup", str(tmp_path / "nothing"), "--no-progress"])
    assert r.exit_code == 2 and "run 'curate crop" in r.output


# --------------------------------------------------------------------------------------- the sample

def test_the_samples_known_pairs_are_caught_by_a_real_run(sample_root, tmp_path):
    from curate.crop.cascades import ANIMEFACE_FILE, CASCADE_DIR, sha256_of
    from curate.crop.cropper import CropConfig
    from curate.crop.runner import open_sources, run_crop
    from curate.filter.runner import FilterRules, run_filter

    cascade = CASCADE_DIR / ANIMEFACE_FILE
    if not cascade.is_file():
        pytest.skip("the anime-face cascade is not installed (make cascades)")
    rules = FilterRules(exclude_tags=frozenset(), ratings=frozenset("gsqe"))
    run_filter([sample_root / "metadata"], tmp_path / "f.parquet", rules, dataset_root=sample_root, workers=1,
               progress=False)
    sources, _ = open_sources(tmp_path / "f.parquet", sample_root)
    wd = tmp_path / "w"
    run_crop(sources, wd, CropConfig(cascade=str(cascade), cascade_sha256=sha256_of(cascade), pad=True),
             workers=2, progress=False)
    stats = run_dedup(wd, workers=2, progress=False)
    got = rows(Workdir(wd))
    groups = {frozenset(c.split("_")[0] for c, r in got.items() if r["group"] == g)
              for g in {r["group"] for r in got.values() if r["group"]}}
    assert groups == {frozenset({"2142264", "2142265"}), frozenset({"2142326", "2142348"})}
    assert stats["near_duplicate"] == 2 and json.loads(Workdir(wd).dedup_stats.read_text())["crops"] == stats["crops"]
    shutil.rmtree(state_root(Workdir(wd)))  # the state is a cache: without it the same table comes back
    before = Workdir(wd).dedup_table.read_bytes()
    (Workdir(wd).dedup_stats).unlink()
    run_dedup(wd, workers=1, progress=False)
    assert Workdir(wd).dedup_table.read_bytes() == before
