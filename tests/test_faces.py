"""curate.testing.faces: the sample's face truth and the precision / recall it scores detectors by."""

from __future__ import annotations

from PIL import Image

from curate.crop.geometry import iou, match_boxes
from curate.testing.faces import Score, TruthFace, load_truth


def test_the_truth_covers_every_sample_image_with_boxes_inside_it(sample_root):
    truth = load_truth()
    images = {p.relative_to(sample_root).as_posix() for p in (sample_root / "original").glob("*/*.jpg")}
    assert set(truth) == images and len(images) == 50
    for source, faces in truth.items():
        with Image.open(sample_root / source) as im:
            width, height = im.size
        for f in faces:
            x, y, w, h = f.box
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height, source
    assert sum(not f.ambiguous for faces in truth.values() for f in faces) == 49


def test_iou_and_greedy_matching():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 10, 10)) - 50 / 150) < 1e-9
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    # the best overlap wins; each box is used once
    pairs = match_boxes([(3, 0, 10, 10), (0, 0, 10, 10)], [(1, 0, 10, 10)], 0.3)
    assert [(i, j) for i, j, _ in pairs] == [(1, 0)]
    assert match_boxes([(0, 0, 10, 10)], [(9, 9, 10, 10)], 0.3) == []


def test_scores_count_hits_misses_false_faces_and_ignore_ambiguous_ones():
    s = Score()
    truth = [TruthFace((0, 0, 10, 10)), TruthFace((50, 50, 10, 10)), TruthFace((100, 100, 10, 10), ambiguous=True)]
    s.add("a", truth, [(1, 1, 10, 10), (100, 100, 10, 10), (200, 200, 10, 10)])
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)  # the ambiguous face: neither a hit nor a false positive
    assert s.missed == ["a"] and s.false == ["a"]
    s.add("b", [TruthFace((100, 100, 10, 10), ambiguous=True)], [])
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)
    assert s.precision == 0.5 and s.recall == 0.5
    assert Score().precision == 1.0 and Score().recall == 1.0
