"""curate.crop.animeface: AnimeFace 2009's libnvxs through ctypes, with the project's Pillow (12)."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import pickle
from pathlib import Path

import numpy as np
import pytest

from curate.core.image import decode_image
from curate.crop.animeface import MIN_SIDE, AnimeFaceDetector, library_path
from curate.crop.geometry import iou
from curate.testing.faces import load_truth

# What the animeface 2.0.3 package's own binding returned for these images under Pillow 10.4 (where it
# still worked): likelihood, face box, left eye box, right eye box, mouth box, nose, chin.
REFERENCE = {
    "original/0238/2142238.jpg": (0.99999994, (197, 92, 106, 106), (262, 112, 28, 20), (210, 116, 27, 20),
                                  (244, 158, 21, 9), (249, 145), (253, 182)),
    "original/0249/2142249.jpg": (0.99999994, (94, 132, 152, 152), (200, 176, 44, 32), (123, 172, 41, 30),
                                  (167, 234, 22, 11), (170, 219), (174, 262)),
    "original/0377/2142377.jpg": (0.53252757, (328, 125, 56, 56), (362, 133, 15, 17), (334, 137, 16, 17),
                                  (353, 161, 8, 6), (356, 154), (355, 173)),
}


def rgb(path: Path) -> np.ndarray:
    decoded = decode_image(path, 1 << 30)
    return np.asarray(decoded.image)


@pytest.fixture(scope="module")
def detector() -> AnimeFaceDetector:
    library_path()  # the animeface wheel is an install requirement: no skip when it is missing
    return AnimeFaceDetector()


@pytest.mark.parametrize("source", sorted(REFERENCE))
def test_the_same_faces_as_the_original_binding_under_pillow_10(detector, sample_root, source):
    faces = detector(rgb(sample_root / source))
    assert len(faces) == 1, "AnimeFace found nothing (or more) where its own binding found one face"
    f, (likelihood, face, left, right, mouth, nose, chin) = faces[0], REFERENCE[source]
    assert f.likelihood == pytest.approx(likelihood, abs=1e-6)
    assert (f.face, f.left_eye, f.right_eye, f.mouth, f.nose, f.chin) == (face, left, right, mouth, nose, chin)


def test_finds_the_faces_a_person_sees_in_the_sample(detector, sample_root):
    """Fails if the binding ever returns nothing (as the package's own does with Pillow >= 11)."""
    truth = load_truth()
    hits = []
    for source, faces in truth.items():
        found = detector(rgb(sample_root / source))
        if any(iou(t.box, f.face) >= 0.3 for t in faces for f in found):
            hits.append(source)
    # measured: 33 of the 49 clear faces (docs/detectors.md); a broken binding finds 0
    assert len(hits) >= 30, hits


def test_landmarks_sit_where_a_face_has_them(detector, sample_root):
    f = detector(rgb(sample_root / "original/0249/2142249.jpg"))[0]
    x, y, w, h = f.face
    (lx, ly), (rx, ry) = f.centre(f.left_eye), f.centre(f.right_eye)
    (mx, my), (cx, cy) = f.centre(f.mouth), f.chin
    for px, py in ((lx, ly), (rx, ry), (mx, my), f.nose, (cx, cy)):
        assert x <= px <= x + w and y <= py <= y + h * 1.2
    assert lx > rx  # the character's left eye is on the image's right
    assert max(ly, ry) < f.nose[1] < my < cy  # eyes, nose, mouth, chin from top to bottom
    assert f.hair != f.skin and all(0 <= c <= 255 for c in f.hair + f.skin)


def test_colours_do_not_depend_on_what_the_process_saw_before(detector, sample_root):
    a, b = rgb(sample_root / "original/0238/2142238.jpg"), rgb(sample_root / "original/0249/2142249.jpg")
    first = detector(a)
    detector(b)
    detector(b)
    assert detector(a) == first  # libnvxs' random sampling is seeded per face


def test_images_with_no_window_and_blank_images_give_no_face(detector):
    assert detector(np.zeros((MIN_SIDE - 1, 400, 3), np.uint8)) == []
    assert detector(np.full((200, 300, 3), 255, np.uint8)) == []
    with pytest.raises(ValueError, match="RGB array"):
        detector(np.zeros((100, 100), np.uint8))


def _detect_in_child(detector: AnimeFaceDetector, image: np.ndarray):
    return detector(image)


def test_the_detector_pickles_and_loads_libnvxs_in_a_spawned_process(detector, sample_root):
    image = rgb(sample_root / "original/0238/2142238.jpg")
    expected = detector(image)  # loaded here first: the handle must not travel
    clone = pickle.loads(pickle.dumps(detector))
    assert clone._lib is None
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        assert pool.submit(_detect_in_child, detector, image).result() == expected
