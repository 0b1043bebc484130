from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate import cli
from curate.crop.cascades import ANIMEFACE_FILE, CASCADE_DIR, load_cascade, sha256_of
from curate.crop.cropper import CropConfig, Cropper, Source, detect_faces, detector_input
from curate.crop.runner import PARTS_DIR, folder_crop_base, open_sources, run_crop, stats_path
from curate.core.image import decode_image
from curate.core.workdir import CROPS_SCHEMA, Workdir

ROOT = Path(__file__).resolve().parents[1]
FOOD = "2142276"


@pytest.fixture
def cascade() -> Path:
    path = CASCADE_DIR / ANIMEFACE_FILE
    if not path.is_file():
        pytest.skip(f"{path} is not fetched; run 'make cascades'")
    return path


def config(cascade: Path, **kw) -> CropConfig:
    return CropConfig(cascade=str(cascade), cascade_sha256=sha256_of(cascade), **kw)


def sample_images(sample_root: Path) -> list[Path]:
    return sorted((sample_root / "original").glob("*/*.jpg"))


def bad_inputs(folder: Path) -> dict[str, str]:
    """Every kind of bad input from the issue, written into `folder`; name -> expected reason (None: decodes)."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.effect_noise((300, 300), 50).convert("RGB").save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[:2000])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image\n")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(folder / "png-named.jpg", "PNG")
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(folder / "cmyk.jpg", "JPEG")
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(folder / "sixteen.png")
    Image.new("P", (64, 64), 3).save(folder / "palette.png", transparency=3)
    Image.new("RGBA", (64, 64), (9, 9, 9, 0)).save(folder / "rgba.png")
    Image.new("L", (64, 64), 100).save(folder / "grey.jpg")
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.new("RGB", (80, 40)).save(folder / "rotated.jpg", exif=exif)
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "blue")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (600, 600)).save(folder / "bomb.png")  # above the test's --max-pixels
    return {
        "truncated.jpg": "truncated", "empty.jpg": "empty_file", "text.jpg": "not_an_image",
        "png-named.jpg": "no_face", "cmyk.jpg": "no_face", "sixteen.png": "no_face", "palette.png": "no_face",
        "rgba.png": "no_face", "grey.jpg": "no_face", "rotated.jpg": "no_face", "animated.gif": "no_face",
        "bomb.png": "decompression_bomb",
    }


def test_each_bad_input_gets_its_reason_and_the_run_goes_on(tmp_path, cascade, sample_root):
    expected = bad_inputs(tmp_path / "in")
    good = sample_root / "original" / "0266" / "2142266.jpg"  # a clear, centred face
    shutil.copy(good, tmp_path / "in" / "zz-good.jpg")
    cfg = config(cascade, max_pixels=300_000)
    sources, ignored = open_sources(tmp_path / "in")
    assert ignored == {} and len(sources) == len(expected) + 1
    cropper = Cropper(cfg)
    got = {s.source: cropper(s, Path(s.path).read_bytes()) for s in sources}
    for name, reason in expected.items():
        assert got[name].reason == reason, name
        assert got[name].rows == []
    assert got["zz-good.jpg"].reason is None and len(got["zz-good.jpg"].rows) == 1
    # the rotated file: its oriented size is recorded as the source size
    assert decode_image(tmp_path / "in" / "rotated.jpg", 10**6).source_size == (40, 80)

    # the same through the whole stage, with a missing file from a filtered table
    stats = run_crop(sources + [Source(str(tmp_path / "in" / "gone.jpg"), "gone.jpg", "gone", 7)],
                     tmp_path / "work", cfg, workers=1, progress=False)
    assert stats["images"] == len(expected) + 2
    assert stats["decode_failures"] == {"missing_file": 1, "empty_file": 1, "not_an_image": 1,
                                        "decompression_bomb": 1, "truncated": 1}
    assert stats["no_face"] == 8 and stats["crops"] == 1
    assert {f["source"]: f["reason"] for f in stats["failures"]}["gone.jpg"] == "missing_file"
    assert json.loads(stats_path(Workdir(tmp_path / "work")).read_text())["crops"] == 1


def test_detection_on_the_full_sample_with_plain_settings(cascade, sample_root):
    clf = load_cascade(cascade)
    found = {}
    for path in sample_images(sample_root):
        d = decode_image(path, 10**8)
        faces = detect_faces(clf, detector_input(d.image, d.image.size), 1.1, 5, 24)
        found[path.stem] = faces
        assert [c for _, c in faces] == sorted((c for _, c in faces), reverse=True)  # index 0 = most confident
    assert len(found) == 50
    assert sum(1 for f in found.values() if f) == 29
    assert found[FOOD] == []


def check_workdir(work: Path, height: int = 512, width: int = 256) -> pa.Table:
    table = pq.read_table(work / "crops.parquet")
    assert table.schema.equals(CROPS_SCHEMA)
    for row in table.to_pylist():
        assert row["crop_id"] == f"{row['post_id']}_{row['face_index']}" if row["post_id"] else True
        assert row["crop_h"] == 2 * row["crop_w"]
        assert row["scale"] <= 2.0 + 1e-6  # never more than 2x upscaling by default
        assert row["file"] == Workdir.crop_file(row["crop_id"])
        with Image.open(work / row["file"]) as im:
            assert im.size == (width, height) and im.format == "PNG"
        # the face is inside its crop box
        assert row["crop_x"] <= row["face_x"] and row["face_x"] + row["face_w"] <= row["crop_x"] + row["crop_w"]
        assert row["crop_y"] <= row["face_y"] and row["face_y"] + row["face_h"] <= row["crop_y"] + row["crop_h"]
    return table


def filtered_table(sample_root: Path, dest: Path, copies: int = 1) -> Path:
    """A filtered table over the sample's images (the columns crop reads), repeated `copies` times with new ids."""
    images = sample_images(sample_root)
    ids, paths = [], []
    for c in range(copies):
        for p in images:
            ids.append(int(p.stem) + c * 10_000_000)
            paths.append(p.relative_to(sample_root).as_posix())
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "path": paths}), dest)
    return dest


def test_crop_stage_on_the_sample_via_the_cli(tmp_path, cascade, sample_root, capsys):
    table_path = filtered_table(sample_root, tmp_path / "filtered.parquet")
    argv = ["crop", str(table_path), "--dataset-root", str(sample_root), "--out", str(tmp_path / "w"),
            "--no-progress", "--overlays", str(tmp_path / "ov"), "-j", "2"]
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("crop: 50 images")
    table = check_workdir(tmp_path / "w")
    stats = json.loads((tmp_path / "w" / "crops.stats.json").read_text())
    assert stats["images"] == 50 and stats["crops"] == table.num_rows > 5
    assert stats["decoded"] == stats["no_face"] + stats["images_with_faces"]
    assert stats["faces"] == stats["crops"] + sum(stats["rejected_faces"].values()) + stats["over_max_faces"]
    assert FOOD not in {str(p) for p in table.column("post_id").to_pylist()}
    assert (tmp_path / "ov" / "crops-sheet.png").is_file() and (tmp_path / "ov" / "overlays-sheet.png").is_file()
    assert len(list((tmp_path / "ov" / "images").glob("*.jpg"))) == 50


def workdir_bytes(work: Path) -> dict[str, bytes]:
    """Every output file of a workdir (not the parts, not the stats' run details)."""
    out = {"crops.parquet": (work / "crops.parquet").read_bytes()}
    for f in sorted((work / "crops").rglob("*")):
        if f.is_file():
            out[f.relative_to(work).as_posix()] = f.read_bytes()
    return out


def test_same_input_gives_identical_outputs_with_any_worker_count(tmp_path, cascade, sample_root):
    sources, _ = open_sources(sample_root / "original")
    cfg = config(cascade)
    a = run_crop(sources, tmp_path / "a", cfg, workers=1, progress=False, chunk=7)
    b = run_crop(sources, tmp_path / "b", cfg, workers=2, progress=False)
    assert a["crops"] == b["crops"] > 5
    assert workdir_bytes(tmp_path / "a") == workdir_bytes(tmp_path / "b")
    check_workdir(tmp_path / "a")
    # folder ids: stable, from the relative path, post_id null
    table = pq.read_table(tmp_path / "a" / "crops.parquet")
    assert table.column("post_id").null_count == table.num_rows
    row = table.slice(0, 1).to_pylist()[0]
    assert row["crop_id"] == f"{folder_crop_base(row['source'])}_{row['face_index']}"
    # a rerun finds everything done and changes nothing
    before = workdir_bytes(tmp_path / "a")
    again = run_crop(sources, tmp_path / "a", cfg, workers=2, progress=False, chunk=7)
    assert again["processed_now"] == 0 and workdir_bytes(tmp_path / "a") == before
    # another setting replaces the old crops: no file of the old run is left behind
    run_crop(sources, tmp_path / "a", config(cascade, k=2.0, min_k=1.5), workers=2, progress=False)
    files = set(pq.read_table(tmp_path / "a" / "crops.parquet").column("file").to_pylist())
    assert {f.relative_to(tmp_path / "a").as_posix() for f in (tmp_path / "a" / "crops").rglob("*.png")} == files
    assert len(list((tmp_path / "a" / PARTS_DIR).iterdir())) == 1


_RUN = """
import sys
from curate.crop import CropConfig
from curate.crop.runner import open_sources, run_crop
from curate.crop.cascades import sha256_of
src, work, cascade = sys.argv[1:4]
sources, _ = open_sources(src)
run_crop(sources, work, CropConfig(cascade=cascade, cascade_sha256=sha256_of(cascade)), workers=2, progress=False, chunk=8)
"""


def test_a_killed_run_resumes_to_the_same_outputs(tmp_path, cascade, sample_root):
    # 4 copies of the sample (200 images, 25 chunks): long enough to be killed in the middle
    src = tmp_path / "src"
    for c in range(4):
        (src / f"copy{c}").mkdir(parents=True)
        for p in sample_images(sample_root):
            os.link(p, src / f"copy{c}" / p.name) if _same_device(p, src) else shutil.copy(p, src / f"copy{c}" / p.name)
    sources, _ = open_sources(src)
    work = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", _RUN, str(src), str(work), str(cascade)], env=env,
                            start_new_session=True)
    parts = None
    try:
        while proc.poll() is None:  # wait for the first finished chunk, then kill the whole process group
            found = list(work.glob(f"{PARTS_DIR}/*/*.json"))
            if len(found) >= 2:
                parts = len(found)
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)  # polling, not timing: leave the cores to the run
    finally:
        proc.wait()
    assert parts is not None and parts < len(sources) // 8, "the run was not caught in the middle"
    assert not (work / "crops.parquet").exists()

    resumed = run_crop(sources, work, config(cascade), workers=2, progress=False, chunk=8)
    assert 0 < resumed["processed_now"] < len(sources)
    clean = run_crop(sources, tmp_path / "clean", config(cascade), workers=2, progress=False, chunk=8)
    assert resumed["crops"] == clean["crops"] > 0
    assert workdir_bytes(work) == workdir_bytes(tmp_path / "clean")
    leftovers = [p for p in work.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


def _same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cascade", "/nonexistent/cascade.xml"], "neither"),
        (["--size", "512x512"], "2:1"),
        (["--k", "2", "--min-k", "3"], "larger than"),
        (["--unconfirmed", "reject"], "only --detector both"),
        (["--align"], "add --detector both"),
    ],
)
def test_misuse_is_one_line_and_exit_2(tmp_path, capsys, args, message, cascade):
    (tmp_path / "in").mkdir()
    with pytest.raises(SystemExit) as e:
        cli.main(["crop", str(tmp_path / "in"), "--out", str(tmp_path / "w"), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1


def test_filtered_table_needs_a_dataset_root(tmp_path, capsys):
    pq.write_table(pa.table({"id": [1], "path": ["a.jpg"]}), tmp_path / "f.parquet")
    with pytest.raises(SystemExit) as e:
        cli.main(["crop", str(tmp_path / "f.parquet"), "--out", str(tmp_path / "w"), "--cascade", "frontalface"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--dataset-root" in err and err.count("\n") == 1


def test_crops_from_a_reduced_jpeg_reach_its_edges_on_both_axes(tmp_path):
    # 3001x1500 decodes at 1/4 as 751x375: the axes shrink by 0.25025 and 0.25. A crop touching the
    # bottom edge once ran past the reduced image (one factor used for both) and killed the worker.
    from curate.crop.geometry import Box

    src = tmp_path / "wide.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (1500, 3001, 3), dtype=np.uint8)).save(src, quality=90)
    reduced = decode_image(src, 10**9, 0.25)
    assert reduced.image.size == (751, 375) and reduced.source_size == (3001, 1500)
    cropper = Cropper(CropConfig(cascade="unused", cascade_sha256=""))
    full = np.asarray(decode_image(src, 10**9, 1.0).image, np.float32)
    for box in (Box(2251, 0, 750, 1500), Box(0, 0, 750, 1500), Box(2500, 0, 750, 1500)):  # last one padded
        got = cropper._cut(reduced, box)
        assert got.size == (256, 512)
        if box.x + box.w <= 3001:  # the same region cut from the full decode looks the same
            want = Image.fromarray(full[box.y:box.y + box.h, box.x:box.x + box.w].astype(np.uint8)).resize((256, 512))
            assert np.abs(np.asarray(got, np.float32).mean(axis=(0, 1)) - np.asarray(want, np.float32).mean(axis=(0, 1))).max() < 3


def test_an_unexpected_error_costs_one_image_not_the_run(tmp_path, cascade, sample_root, monkeypatch):
    import curate.crop.runner as crop_module

    images = sample_images(sample_root)[:25]
    folder = tmp_path / "in"
    folder.mkdir()
    for p in images:
        shutil.copy(p, folder / p.name)
    real_cut, calls = crop_module.Cropper._cut, []

    def cut_failing_once(self, decoded, box):  # the first crop of the run hits a bug
        calls.append(box)
        if len(calls) == 1:
            raise RuntimeError("simulated bug in the cutter")
        return real_cut(self, decoded, box)

    monkeypatch.setattr(crop_module.Cropper, "_cut", cut_failing_once)
    sources, _ = open_sources(folder)
    stats = run_crop(sources, tmp_path / "w", config(cascade), workers=1, progress=False)
    assert stats["images"] == 25 and stats["reasons"]["crop_error"] == 1
    (failure,) = [f for f in stats["failures"] if f["reason"] == "crop_error"]
    assert failure["detail"] == "RuntimeError: simulated bug in the cutter"
    assert stats["crops"] >= 1 and "1 failed with an error" in crop_module.summary_line(stats)
    files = set(pq.read_table(tmp_path / "w" / "crops.parquet").column("file").to_pylist())
    assert {f.relative_to(tmp_path / "w").as_posix() for f in (tmp_path / "w" / "crops").rglob("*.png")} == files


# ---- --detector animeface | both ------------------------------------------------------------------

UNCONFIRMED = "original/0281/2142281.jpg"  # a close-up the cascade finds and AnimeFace does not, even around it


def test_both_detectors_add_landmarks_and_faces_the_cascade_misses(tmp_path, cascade, sample_root):
    from curate.core.workdir import CROPS_LANDMARKS_SCHEMA

    sources, _ = open_sources(sample_root / "original")
    lbp = run_crop(sources, tmp_path / "lbp", config(cascade), workers=2, progress=False)
    both = run_crop(sources, tmp_path / "both", config(cascade, detector="both"), workers=2, progress=False, chunk=7)
    assert both["faces"] > lbp["faces"] and both["found_by"]["animeface"] >= 3 and both["found_by"]["both"] >= 25
    assert both["faces"] == both["crops"] + sum(both["rejected_faces"].values()) + both["over_max_faces"]
    table = pq.read_table(tmp_path / "both" / "crops.parquet")
    assert table.schema.equals(CROPS_LANDMARKS_SCHEMA)
    for r in table.to_pylist():
        if r["found_by"] == "lbp":
            assert r["likelihood"] is None and r["left_eye_x"] is None
            continue
        assert 0.5 <= r["likelihood"] <= 1.0 and r["landmark_issue"] is None
        assert (r["confidence"] is None) == (r["found_by"] == "animeface")
        for part in ("left_eye", "right_eye", "nose", "mouth", "chin"):  # inside the face's box, in source pixels
            assert r["face_x"] <= r[f"{part}_x"] <= r["face_x"] + r["face_w"]
            assert r["face_y"] <= r[f"{part}_y"] <= r["face_y"] + r["face_h"] * 1.1
        assert r["left_eye_x"] > r["right_eye_x"] and r["hair_color"].startswith("#") and len(r["skin_color"]) == 7
    # a face both saw keeps the cascade's box: those crops are the LBP run's, byte for byte
    lbp_table = pq.read_table(tmp_path / "lbp" / "crops.parquet").to_pylist()
    shared = [r for r in table.to_pylist() if r["found_by"] == "both"]
    boxes = {(r["source"], r["face_x"], r["face_y"], r["face_w"]): r["file"] for r in lbp_table}
    same = [r for r in shared if (r["source"], r["face_x"], r["face_y"], r["face_w"]) in boxes]
    assert len(same) >= 5
    for r in same:
        key = (r["source"], r["face_x"], r["face_y"], r["face_w"])
        assert (tmp_path / "both" / r["file"]).read_bytes() == (tmp_path / "lbp" / boxes[key]).read_bytes()
    # the same input gives the same bytes with another worker count and chunking (colours included):
    # every other source with a crop again, on one worker in one chunk (the whole sample again cost 20 s)
    cropped = sorted({r["source"] for r in table.to_pylist()})[::2]
    some = [s for s in sources if s.source in cropped]
    run_crop(some, tmp_path / "again", config(cascade, detector="both"), workers=1, progress=False)
    files, full = workdir_bytes(tmp_path / "again"), workdir_bytes(tmp_path / "both")
    del files["crops.parquet"]
    assert len(files) >= 5 and all(full[k] == v for k, v in files.items())
    names = {s.source for s in some}
    rows = pq.read_table(tmp_path / "again" / "crops.parquet").to_pylist()
    assert rows == [r for r in table.to_pylist() if r["source"] in names]


def test_animeface_alone_and_the_unconfirmed_rule(cascade, sample_root):
    path = sample_root / UNCONFIRMED
    src, data = Source(str(path), UNCONFIRMED, "2142281", 2142281), path.read_bytes()
    alone = Cropper(config(cascade, detector="animeface"))(src, data)
    assert alone.reason == "no_face" and alone.faces == 0
    kept = Cropper(config(cascade, detector="both", pad=True))(src, data)
    assert kept.found_by == {"lbp": 1} and len(kept.rows) == 1 and kept.rows[0]["likelihood"] is None
    rejected = Cropper(config(cascade, detector="both", unconfirmed="reject", pad=True))(src, data)
    assert rejected.reason is None and rejected.faces == 1 and rejected.face_reasons == {"unconfirmed": 1}
    assert rejected.rows == []
    good = sample_root / "original" / "0266" / "2142266.jpg"
    one = Cropper(config(cascade, detector="animeface"))(Source(str(good), "g.jpg", "g"), good.read_bytes())
    assert one.found_by == {"animeface": 1} and one.rows[0]["confidence"] is None and one.rows[0]["likelihood"] > 0.9


def _landmarks(**kw):
    from curate.crop.animeface import Landmarks

    base = dict(likelihood=0.9, face=(100.0, 100.0, 80.0, 80.0), left_eye=(150.0, 120.0, 10.0, 8.0),
                right_eye=(110.0, 120.0, 10.0, 8.0), mouth=(130.0, 160.0, 12.0, 6.0), nose=(136.0, 145.0),
                chin=(138.0, 178.0), skin=(250, 230, 220), hair=(20, 10, 300), left_eye_color=(0, 0, 0),
                right_eye_color=(1, 1, 1))
    return Landmarks(**(base | kw))


@pytest.mark.parametrize("change, issue", [
    ({}, None),
    ({"chin": (138.0, 230.0)}, "clamped"),  # below a 200 px tall image
    ({"left_eye": (-30.0, 120.0, 10.0, 8.0)}, "clamped"),
    ({"nose": (float("nan"), 145.0)}, "clamped"),
    ({"left_eye": (111.0, 120.0, 10.0, 8.0)}, "degenerate_eyes"),  # 1 px from the other eye
])
def test_odd_landmarks_are_clamped_or_flagged_never_raised(change, issue):
    from curate.crop.cropper import Face, landmark_columns
    from curate.crop.geometry import Box

    cols = landmark_columns(Face(Box(90, 90, 100, 100), None, _landmarks(**change), "animeface"), (200, 200))
    assert cols["landmark_issue"] == issue
    for name in ("left_eye", "right_eye", "nose", "mouth", "chin"):
        assert 0 <= cols[f"{name}_x"] <= 200 and 0 <= cols[f"{name}_y"] <= 200
    assert cols["hair_color"] == "#140aff"  # a colour channel past 255 is clipped
    assert landmark_columns(Face(Box(0, 0, 9, 9), 1.0), (200, 200))["likelihood"] is None


def test_landmarks_found_on_a_reduced_decode_are_in_source_pixels(tmp_path, cascade, sample_root):
    small_path = sample_root / "original" / "0249" / "2142249.jpg"
    with Image.open(small_path) as im:
        im.convert("RGB").resize((1536, 1536), Image.Resampling.LANCZOS).save(tmp_path / "big.jpg", quality=95)
    cfg = config(cascade, detector="animeface", min_face=150, max_upscale=1.0, pad=True)
    assert cfg.animeface_reduction < 0.5  # AnimeFace sees a JPEG decoded at 1/2 or less
    src = Source(str(tmp_path / "big.jpg"), "big.jpg", "big")
    big = Cropper(cfg)(src, (tmp_path / "big.jpg").read_bytes())
    ref = Cropper(config(cascade, detector="animeface", pad=True))(Source(str(small_path), "s.jpg", "s"),
                                                                   small_path.read_bytes())
    assert big.found_by == ref.found_by == {"animeface": 1}
    b, r = big.rows[0], ref.rows[0]
    assert (b["source_width"], b["source_height"]) == (1536, 1536)
    for part in ("left_eye", "right_eye", "mouth", "chin"):
        for axis in "xy":  # the same face, 3x as large: every point 3x as far from the origin (within 3%)
            assert abs(b[f"{part}_{axis}"] - 3 * r[f"{part}_{axis}"]) <= 0.03 * 3 * r[f"{part}_{axis}"] + 6, part
    assert abs(b["face_w"] - 3 * r["face_w"]) <= 0.08 * 3 * r["face_w"]


def test_a_missing_animeface_package_is_one_line(tmp_path, capsys, cascade, monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    (tmp_path / "in").mkdir()
    with pytest.raises(SystemExit) as e:
        cli.main(["crop", str(tmp_path / "in"), "--out", str(tmp_path / "w"), "--detector", "both"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "pip install animeface==2.0.3" in err and err.count("\n") == 1


def test_align_levels_the_eyes_of_a_turned_face(tmp_path, cascade, sample_root):
    from curate.crop.animeface import AnimeFaceDetector

    with Image.open(sample_root / "original" / "0249" / "2142249.jpg") as im:
        upright = im.convert("RGB")
    # the picture turned 15 degrees counter-clockwise (eye line rising to the right), white around it
    upright.rotate(15, Image.Resampling.BICUBIC, expand=True, fillcolor="white").save(tmp_path / "turned.png")
    upright.save(tmp_path / "upright.png")
    detect = AnimeFaceDetector()
    angles = {}
    for name in ("upright", "turned"):
        src = Source(str(tmp_path / f"{name}.png"), f"{name}.png", name)
        res = Cropper(config(cascade, detector="both", align=True, pad=True))(src, (tmp_path / f"{name}.png").read_bytes())
        assert res.aligned == 1 and len(res.rows) == 1
        angles[name] = res.rows[0]["crop_angle"]
        with Image.open(io.BytesIO(res.crops[0])) as crop:
            found = detect(np.asarray(crop.convert("RGB")))
        assert len(found) == 1  # the face is still a face in the crop, and level there
        (lx, ly), (rx, ry) = found[0].centre(found[0].left_eye), found[0].centre(found[0].right_eye)
        assert abs(np.degrees(np.arctan2(ly - ry, lx - rx))) < 6, name
    assert abs(angles["turned"] - angles["upright"] + 15) < 4
    # past --max-tilt: upright (unrotated), or rejected
    src = Source(str(tmp_path / "turned.png"), "turned.png", "turned")
    data = (tmp_path / "turned.png").read_bytes()
    upright_crop = Cropper(config(cascade, detector="both", align=True, pad=True, max_tilt=5))(src, data)
    assert upright_crop.aligned == 0 and upright_crop.rows[0]["crop_angle"] == 0
    with Image.open(io.BytesIO(upright_crop.crops[0])) as crop:
        f = detect(np.asarray(crop.convert("RGB")))[0]
    (lx, ly), (rx, ry) = f.centre(f.left_eye), f.centre(f.right_eye)
    assert np.degrees(np.arctan2(ly - ry, lx - rx)) < -8  # unrotated, the eyes still slope (the check can fail)
    rejected = Cropper(config(cascade, detector="both", align=True, pad=True, max_tilt=5, too_tilted="reject"))(src, data)
    assert rejected.rows == [] and rejected.face_reasons == {"too_tilted": 1}
