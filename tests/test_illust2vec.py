from __future__ import annotations

import numpy as np

from curate.score.illust2vec import GROUPS, MEAN_BGR, N_OUTPUTS, conv_shapes, infer_width_divisor, person_indices, preprocess
from curate.testing.i2v import PERSON, numpy_preprocess, tag_names


def test_published_shapes_and_size():
    shapes = conv_shapes(1)
    assert shapes["conv1_1"] == (64, 3, 3, 3) and shapes["conv6_3"] == (1024, 1024, 3, 3)
    assert shapes["conv6_4"] == (N_OUTPUTS, 1024, 3, 3)
    params = sum(np.prod(s) + s[0] for s in shapes.values())
    assert round(params / 1e6, 1) == 47.0  # FORMATS.md: about 47.0M parameters
    assert [GROUPS[g] for g in ("general", "character", "copyright", "rating")] == [
        (0, 512), (512, 1024), (1024, 1536), (1536, 1539)]
    assert infer_width_divisor(conv_shapes(16)) == 16


def test_preprocess_is_bgr_minus_mean_of_a_224_bilinear_resize_ignoring_aspect():
    img = np.zeros((512, 256, 3), np.uint8)
    img[:, :128] = (200, 100, 50)  # left half one RGB colour, right half another
    img[:, 128:] = (10, 20, 30)
    out = preprocess(img[None]).numpy()[0]
    assert out.shape == (224, 224, 3)
    # Aspect ignored: the left half of the 224-wide output is the left colour (stretched, not cropped).
    np.testing.assert_allclose(out[100, 10], np.array([50, 100, 200]) - MEAN_BGR, atol=1e-4)
    np.testing.assert_allclose(out[100, 200], np.array([30, 20, 10]) - MEAN_BGR, atol=1e-4)
    # Bilinear with half-pixel centres and no antialiasing, against a hand-written resize.
    rng = np.random.default_rng(0)
    for shape in [(512, 256, 3), (37, 300, 3)]:
        rgb = rng.integers(0, 256, shape, dtype=np.uint8)
        # float32 coordinates in TF: up to ~0.01 of 255; antialiasing or corner alignment would be whole units.
        np.testing.assert_allclose(preprocess(rgb).numpy(), numpy_preprocess(rgb), atol=0.02)


def test_person_tags_are_found_by_name_in_either_spelling():
    tags = tag_names()
    tags[3] = "multiple_boys"  # Danbooru spelling
    found = [tags[i] for i in person_indices(tags)]
    assert set(found) == set(PERSON) | {"multiple_boys"}
    assert all(i < 512 for i in person_indices(tags))
