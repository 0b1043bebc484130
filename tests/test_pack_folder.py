"""`curate pack FOLDER`: a plain folder of same-size images (square or 2:1) packed in NVlabs' layout, read by tf.data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curate.cli import main
from curate.dataset import schema as R
from curate.dataset.pack import shuffled_order


def write_folder(folder: Path, n: int, h: int, w: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n random PNGs of h x w, one 12-pixel-short image, one broken file and a text file; name -> CHW pixels."""
    folder.mkdir(parents=True)
    rng = np.random.RandomState(seed)
    images = {}
    for i in range(n):
        img = rng.randint(0, 256, (h, w, 3), np.uint8)
        Image.fromarray(img).save(folder / f"img{i:02d}.png")
        images[f"img{i:02d}.png"] = img.transpose(2, 0, 1)
    Image.fromarray(rng.randint(0, 256, (h - 4, w, 3), np.uint8)).save(folder / "short.png")
    (folder / "broken.jpg").write_bytes(b"<html>not an image</html>")
    (folder / "README.txt").write_text("not read")
    return images


def pack(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(["pack", *args, "--no-progress", "-j", "1"])
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    return out.out


@pytest.mark.parametrize("h, w, levels", [(16, 16, [(16, 16), (8, 8), (4, 4)]), (16, 8, [(16, 8), (8, 4), (4, 2)])])
def test_a_folder_packs_in_the_images_shape_skipping_bad_and_odd_files(tmp_path, capsys, h, w, levels):
    images = write_folder(tmp_path / "imgs", 7, h, w)
    out = tmp_path / "ds"
    line = pack([str(tmp_path / "imgs"), "--out", str(out), "--name", "faces"], capsys)
    assert f"pack: 9 images in {(tmp_path / 'imgs').resolve()}" in line and "wrong_size 1" in line
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["count"] == 7 and manifest["resolution"] == [h, w]
    assert [(lv["height"], lv["width"]) for lv in manifest["levels"]] == levels
    assert manifest["source"]["skipped"] == {"not_an_image": 1, "wrong_size": 1}
    assert {s["crop_id"] for s in manifest["source"]["skipped_crops"]} == {"broken.jpg", "short.png"}
    # the seeded order over all nine files, the two skipped ones left out; the same order in every level
    names = sorted([*images, "short.png", "broken.jpg"])
    order = [names[i] for i in shuffled_order(len(names), R.SEED) if names[i] in images]
    assert manifest["record_crop_ids"] == order
    files = R.dataset_files(out)
    assert sorted(files, reverse=True) == [R.log2(lh) for lh, _ in levels]
    pytest.importorskip("tensorflow")
    for k, (lh, lw) in enumerate(levels):
        got = [x.numpy() for x in R.level_dataset(files[R.log2(lh)])]
        want = [R.pyramid(images[name], len(levels))[k] for name in order]
        assert len(got) == 7 and all(np.array_equal(a, b) for a, b in zip(got, want)) and got[0].shape == (3, lh, lw)
    # a rerun changes nothing; a touched image makes it pack again
    assert "already up to date" in pack([str(tmp_path / "imgs"), "--out", str(out), "--name", "faces"], capsys)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "imgs" / "img00.png")
    assert "already up to date" not in pack([str(tmp_path / "imgs"), "--out", str(out), "--name", "faces",
                                             "--overwrite"], capsys)


def test_resize_scales_the_same_aspect_only(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    flat = np.full((8, 8, 3), (200, 40, 90), np.uint8)
    for i in range(3):
        Image.fromarray(flat).save(folder / f"a{i}.png")
    Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(folder / "tall.png")
    line = pack([str(folder), "--out", str(tmp_path / "ds"), "--size", "16x16", "--resize"], capsys)
    assert "wrong_size 1" in line
    manifest = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert manifest["count"] == 3 and manifest["levels"][0]["height"] == 16 and manifest["levels"][-1]["width"] == 4
    assert "another aspect" in manifest["source"]["skipped_crops"][0]["detail"]
    with open(R.dataset_files(tmp_path / "ds")[4][0], "rb") as f:
        first = R.decode_example(next(R.iter_records(f)))
    assert first.shape == (3, 16, 16) and np.array_equal(first[:, 5, 7], [200, 40, 90])


def test_a_folder_without_images_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(SystemExit) as e:
        main(["pack", str(tmp_path / "empty"), "--out", str(tmp_path / "ds"), "--no-progress"])
    assert e.value.code != 0
    assert "crops.parquet does not exist" in capsys.readouterr().err
