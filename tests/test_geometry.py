from __future__ import annotations

import random

import pytest

from curate.crop.geometry import Box, Portrait, min_source_height, portrait_box, scale_box, smallest_useful_face


def check_invariants(face: Box, size: tuple[int, int], p: Portrait, k: float, min_k: float) -> None:
    """What every portrait box must satisfy, whatever the face and image."""
    b = p.box
    width, height = size
    assert b.h == 2 * b.w
    assert min_k * face.w - 1 <= b.w <= k * face.w + 1  # whole pixels
    # the face is whole inside the box, its centre in the upper half
    assert b.x <= face.x and face.x + face.w <= b.x + b.w
    assert b.y <= face.y and face.y + face.h <= b.y + b.h
    assert face.y + face.h / 2 - b.y <= b.h / 2 + 1
    inside = b.x >= 0 and b.y >= 0 and b.x + b.w <= width and b.y + b.h <= height
    assert inside != p.padded


def test_centred_face_gets_full_k_and_sits_in_the_upper_square():
    face = Box(450, 300, 100, 100)
    p = portrait_box(face, (1000, 1500), k=2.5, min_k=1.75)
    assert p == Portrait(Box(375, 225, 250, 500), 2.5, False)
    # face centre = centre of the upper square
    assert p.box.x + p.box.w / 2 == face.x + face.w / 2
    assert p.box.y + p.box.w / 2 == face.y + face.h / 2


@pytest.mark.parametrize(
    "face, expected_x, expected_y",
    [
        (Box(10, 300, 100, 100), 0, 225),  # left edge: shifted right
        (Box(890, 300, 100, 100), 750, 225),  # right edge: shifted left
        (Box(450, 20, 100, 100), 375, 0),  # top edge: shifted down
    ],
)
def test_box_past_an_edge_is_shifted_inside_keeping_k(face, expected_x, expected_y):
    p = portrait_box(face, (1000, 1500), k=2.5, min_k=1.75)
    assert isinstance(p, Portrait)
    assert (p.box.x, p.box.y, p.k, p.padded) == (expected_x, expected_y, 2.5, False)
    check_invariants(face, (1000, 1500), p, 2.5, 1.75)


def test_face_low_in_the_image_shrinks_k_so_the_figure_below_fits():
    # 200 px from the face centre to the bottom: half the box can be at most 200 -> k = 2
    face = Box(450, 1250, 100, 100)
    p = portrait_box(face, (1000, 1500), k=2.5, min_k=1.75)
    assert p == Portrait(Box(400, 1100, 200, 400), 2.0, False)


def test_narrow_image_shrinks_k_to_its_width():
    face = Box(50, 100, 100, 100)
    p = portrait_box(face, (180, 1000), k=2.5, min_k=1.75)
    assert p == Portrait(Box(0, 60, 180, 360), 1.8, False)


@pytest.mark.parametrize(
    "face, size",
    [
        (Box(50, 100, 100, 100), (160, 1000)),  # too narrow even at min_k
        (Box(450, 1340, 100, 100), (1000, 1500)),  # face at the bottom: no figure below it
        (Box(100, 100, 300, 300), (512, 512)),  # close-up: the box would be taller than the image
    ],
)
def test_box_that_does_not_fit_at_min_k_is_rejected_or_padded(face, size):
    assert portrait_box(face, size, k=2.5, min_k=1.75) == "does_not_fit"
    p = portrait_box(face, size, k=2.5, min_k=1.75, pad=True)
    assert isinstance(p, Portrait) and p.padded and p.k == 1.75
    check_invariants(face, size, p, 2.5, 1.75)


def test_box_exactly_the_size_of_the_image_fits():
    face = Box(75, 75, 100, 100)
    assert portrait_box(face, (250, 500), k=2.5, min_k=1.75) == Portrait(Box(0, 0, 250, 500), 2.5, False)


def test_min_k_equal_k_never_shrinks():
    assert portrait_box(Box(50, 100, 100, 100), (240, 1000), k=2.5, min_k=2.5) == "does_not_fit"


def test_invariants_hold_for_many_random_faces_and_images():
    rng = random.Random(3)
    fitted = padded = 0
    for _ in range(3000):
        width, height = rng.randint(40, 3000), rng.randint(40, 3000)
        fw = rng.randint(8, max(8, min(width, height) // 2))
        fh = max(1, int(fw * rng.uniform(0.8, 1.2)))
        if fw > width or fh > height:
            continue
        face = Box(rng.randint(0, width - fw), rng.randint(0, height - fh), fw, fh)
        k = rng.uniform(1.2, 4.0)
        min_k = rng.uniform(1.0, k)
        p = portrait_box(face, (width, height), k, min_k)
        if isinstance(p, Portrait):
            fitted += 1
            assert not p.padded
            check_invariants(face, (width, height), p, k, min_k)
        else:
            assert p == "does_not_fit"
            q = portrait_box(face, (width, height), k, min_k, pad=True)
            padded += 1
            check_invariants(face, (width, height), q, k, min_k)
    assert fitted > 500 and padded > 500  # both branches were exercised


def test_upscale_floor_and_smallest_useful_face():
    assert min_source_height(512, 2.0) == 256
    assert min_source_height(512, 1.0) == 512
    assert min_source_height(256, 3.0) == 86
    # a 52 px face at k=2.5 gives a 130x260 box: tall enough; 51 px gives 255 < 256
    assert smallest_useful_face(512, 2.0, 2.5) == 52


def test_scale_box_maps_reduced_coordinates_back_and_stays_inside():
    assert scale_box(Box(10, 20, 30, 30), 4.0, 4.0, (1000, 1000)) == Box(40, 80, 120, 120)
    assert scale_box(Box(240, 0, 20, 20), 4.0, 4.0, (1000, 1000)) == Box(960, 0, 40, 80)


# ---- --align ------------------------------------------------------------------------------------

def test_aligned_box_of_an_upright_face_is_the_level_portrait():
    from curate.crop.geometry import ALIGN_FACE_PER_S, aligned_box

    # eyes 40 px apart at y 200, mouth 50 px below their midpoint: s = max(80, 90) = 90
    a = aligned_box((520.0, 200.0), (480.0, 200.0), (500.0, 250.0), (1000, 1500), k=2.5, min_k=1.75)
    assert a.angle == 0 and not a.padded and a.k == 2.5
    fw = ALIGN_FACE_PER_S * 90
    assert a.box.w == round(2.5 * fw) and a.box.h == 2 * a.box.w
    (x0, y0), (_, y1), (x1, _), _ = a.quad
    assert abs((x0 + x1) / 2 - 500) < 1e-6 and abs(x1 - x0 - 2.5 * fw) < 1e-6 and abs(y1 - y0 - 5 * fw) < 1e-6
    # the face centre (between eyes and mouth, a little lower) is the centre of the upper square
    assert 205 < y0 + 2.5 * fw / 2 < 240


def test_aligned_box_follows_the_eye_line_and_shrinks_pads_or_rejects_at_the_edge():
    import math

    from curate.crop.geometry import aligned_box

    t = math.radians(20)  # the same face turned 20 degrees clockwise (down to the right) about the eye midpoint

    def turn(x, y):
        return (500 + (x - 500) * math.cos(t) - (y - 200) * math.sin(t), 200 + (x - 500) * math.sin(t) + (y - 200) * math.cos(t))

    a = aligned_box(turn(520, 200), turn(480, 200), turn(500, 250), (1000, 1500), k=2.5, min_k=1.75)
    assert abs(a.angle - 20) < 1e-3
    (tlx, tly), (blx, bly), _, (trx, try_) = a.quad
    assert abs(math.degrees(math.atan2(try_ - tly, trx - tlx)) - 20) < 1e-6  # the top edge has the eyes' slope
    # near the top edge: k shrinks about the face, below min_k it is rejected, or padded with pad
    near = aligned_box((520.0, 60.0), (480.0, 60.0), (500.0, 110.0), (1000, 1500), k=2.5, min_k=1.0)
    assert not isinstance(near, str) and 1.0 <= near.k < 2.5 and not near.padded
    assert min(y for _, y in near.quad) >= -1e-6
    assert aligned_box((520.0, 60.0), (480.0, 60.0), (500.0, 110.0), (1000, 1500), k=2.5, min_k=2.4) == "does_not_fit"
    padded = aligned_box((520.0, 60.0), (480.0, 60.0), (500.0, 110.0), (1000, 1500), k=2.5, min_k=2.4, pad=True)
    assert padded.padded and padded.k == 2.4
    with pytest.raises(ValueError):
        aligned_box((500.0, 200.0), (500.0, 200.0), (500.0, 200.0), (1000, 1000), k=2.5, min_k=1.75)
