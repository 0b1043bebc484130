"""curate.explore's mechanics on a tiny run written in seconds (untrained weights, real checkpoint):
latents through PNG, interpolation ends, a planted direction, edits, feature maps, animations, stores."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from PIL import Image  # noqa: E402

from curate.cli import main  # noqa: E402
from curate.core.grid import sheet_size  # noqa: E402
from curate.explore import Edit, Explorer, ExploreError, Latent  # noqa: E402
from curate.explore import directions as D  # noqa: E402
from curate.explore import edits as E  # noqa: E402
from curate.explore.interp import interpolate  # noqa: E402
from curate.explore.latent import read_png  # noqa: E402
from curate.explore.maps import cell_channels, channel_magnitudes, colour, map_tiles  # noqa: E402
from curate.explore.media import gif_bytes, strip_png  # noqa: E402
from curate.testing.runs import make_run  # noqa: E402


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    return Explorer(make_run(tmp_path_factory.mktemp("run") / "00000-tiny", height=32, width=16))


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_the_run_renders_at_its_full_size_and_images_differ_by_seed(ex):
    assert (ex.height, ex.width, ex.level) == (32, 16, 5)
    assert [lv["level"] for lv in ex.levels()] == [2, 3, 4, 5] and ex.levels()[0]["height"] == 4
    a, b = ex.render([ex.from_seed(1), ex.from_seed(2)])
    assert a.shape == (32, 16, 3) and a.dtype == np.uint8 and np.abs(a.astype(int) - b).mean() > 5
    # alone or with others: an image depends on its own latent only
    assert np.array_equal(ex.render([ex.from_seed(2)])[0], b)


def test_latents_and_edits_round_trip_through_the_png(ex, tmp_path):
    lat = ex.from_seed(7, psi=0.5)
    edit = Edit(level=4, channels=(1, 5), region=(0.1, 0.2, 0.6, 0.5), multiplier=-3.0, name="x")
    png = ex.png(lat, [edit])
    prov = read_png(png)
    assert prov.latent.w.tobytes() == lat.w.tobytes() and prov.latent.z.tobytes() == lat.z.tobytes()
    assert (prov.latent.seed, prov.latent.psi, prov.edits, prov.run) == (7, 0.5, [edit], "00000-tiny")
    assert np.array_equal(ex.render([prov.latent], prov.edits)[0], pixels(png))
    # curate generate --from draws it again, bit for bit
    (tmp_path / "liked.png").write_bytes(png)
    with pytest.raises(SystemExit) as e:
        main(["generate", str(ex.run_dir), "--from", str(tmp_path / "liked.png"), "-o", str(tmp_path / "out")])
    assert e.value.code == 0
    assert np.array_equal(pixels((tmp_path / "out" / "liked.png").read_bytes()), pixels(png))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["liked.png"]


def test_a_png_without_a_latent_is_one_line(ex, tmp_path, capsys):
    buf = io.BytesIO()
    Image.new("RGB", (8, 16)).save(buf, "PNG")
    with pytest.raises(ExploreError, match="carries no latent"):
        read_png(buf.getvalue())
    with pytest.raises(ExploreError, match="^the image is not an image") as junk:
        read_png(b"junk bytes")
    assert "BytesIO" not in str(junk.value) and "0x" not in str(junk.value)  # no Python object in the message
    (tmp_path / "plain.png").write_bytes(buf.getvalue())
    with pytest.raises(SystemExit) as e:
        main(["generate", str(ex.run_dir), "--from", str(tmp_path / "plain.png"), "-o", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "plain.png carries no latent" in err
    with pytest.raises(ExploreError, match="another run"):
        ex.render([Latent(w=np.zeros((3, 7), np.float32))])


@pytest.mark.parametrize("space", ["w", "z"])
def test_interpolation_ends_are_the_two_images(ex, space):
    a, b = ex.from_seed(3), ex.from_seed(4)
    frames = interpolate(ex, a, b, 6, space)
    images = ex.render(frames)
    assert len(images) == 6
    assert np.array_equal(images[0], ex.render([a])[0]) and np.array_equal(images[-1], ex.render([b])[0])
    steps = [np.abs(images[i + 1].astype(int) - images[i]).mean() for i in range(5)]
    assert all(s > 0 for s in steps)  # it moves at every frame
    strip = Image.open(io.BytesIO(strip_png(images)))
    assert strip.size == (16 * 6, 32)
    gif = Image.open(io.BytesIO(gif_bytes(images)))
    assert gif.format == "GIF" and gif.n_frames == 6


def test_z_interpolation_needs_z(ex):
    a = ex.from_seed(3)
    moved = D.move(a, [(D.Direction("d", np.ones((ex.num_layers, ex.dlatent_size), np.float32)), 0.5)])
    assert moved.z is None
    with pytest.raises(ExploreError, match="needs both images' z"):
        interpolate(ex, a, moved, 4, "z")


def test_a_planted_direction_is_recovered(ex):
    rng = np.random.default_rng(0)
    v = rng.normal(size=ex.dlatent_size).astype(np.float32)
    v /= np.linalg.norm(v)
    base = [ex.from_seed(s) for s in range(40)]
    with_ = [lat.replace(w=lat.w + 3.0 * v) for lat in base[:20]]
    d = D.from_marks("planted", with_, base[20:])
    assert d.vector.shape == (ex.num_layers, ex.dlatent_size)
    per_layer = d.vector / np.linalg.norm(d.vector, axis=1, keepdims=True)
    assert (per_layer @ v).min() > 0.9
    with pytest.raises(ExploreError, match="at least 2"):
        D.from_marks("few", with_[:1], base[20:])


def test_moving_along_a_direction_changes_the_image_and_zero_leaves_it(ex):
    a = ex.from_seed(5)
    d = D.from_marks("d", [ex.from_seed(s) for s in (1, 2)], [ex.from_seed(s) for s in (3, 4)])
    assert D.move(a, [(d, 0.0)]) is a
    moved = ex.render([D.move(a, [(d, 2.0)])])[0]
    assert np.abs(moved.astype(int) - ex.render([a])[0]).mean() > 1


def test_directions_are_saved_exported_imported_and_combined(ex, tmp_path):
    store = D.DirectionStore(tmp_path / "run")
    a = D.from_marks("smile", [ex.from_seed(s) for s in (1, 2)], [ex.from_seed(s) for s in (3, 4)])
    b = D.Direction("hair", np.ones((1, ex.dlatent_size), np.float32), "hand-made")
    store.save(a), store.save(b)
    assert [d.name for d in store.all()] == ["smile", "hair"]
    assert np.array_equal(store.get("smile").vector, a.vector)  # float32 through JSON, exactly
    assert store.get("hair").fit(ex).vector.shape == (ex.num_layers, ex.dlatent_size)
    c = D.combine("both", [(a, 1.0), (b.fit(ex), -0.5)])
    assert np.allclose(c.vector, a.vector - 0.5) and "smile" in c.source
    other = D.DirectionStore(tmp_path / "other")
    assert other.import_json(store.export_json()) == ["smile", "hair"]
    assert json.loads((tmp_path / "other" / "explore" / "directions.json").read_text())["directions"][1]["source"] == "hand-made"
    assert store.delete("smile") and [d.name for d in store.all()] == ["hair"]
    with pytest.raises(ExploreError, match="no name"):
        other.import_json('[{"vector": [1, 2]}]')
    with pytest.raises(ExploreError, match="this run's w"):
        D.Direction("bad", np.ones((2, 3), np.float32)).fit(ex)


def test_an_edit_with_multiplier_zero_is_no_edit_bit_for_bit(ex):
    a = ex.from_seed(6)
    zero = Edit(level=3, channels=tuple(range(8)), region=(0.0, 0.0, 1.0, 1.0), multiplier=0.0)
    assert ex.render([a], [zero]).tobytes() == ex.render([a]).tobytes()
    assert ex.feature_maps(a, 4, [zero]).tobytes() == ex.feature_maps(a, 4).tobytes()


@pytest.mark.parametrize("level", [3, 4])
def test_an_edit_changes_pixels_inside_its_region_more_than_outside(ex, level):
    a = ex.from_seed(6)
    edit = Edit(level=level, channels=tuple(range(0, 32, 2)), region=(0.0, 0.0, 0.5, 0.5), multiplier=4.0)
    diff = np.abs(ex.render([a], [edit])[0].astype(int) - ex.render([a])[0]).mean(axis=-1)
    inside, outside = diff[:16, :8].mean(), diff[16:, 8:].mean()
    assert inside > 2 * outside and inside > 5
    # the same edit applies to any image
    b = ex.from_seed(9)
    assert np.abs(ex.render([b], [edit])[0].astype(int) - ex.render([b])[0]).mean() > 1


def test_edits_refuse_a_level_or_channel_the_run_lacks(ex):
    a = ex.from_seed(1)
    with pytest.raises(ExploreError, match="level 9"):
        ex.render([a], [Edit(level=9, channels=(0,))])
    with pytest.raises(ExploreError, match="channels 0 to 31"):
        ex.render([a], [Edit(level=3, channels=(40,))])
    with pytest.raises(ExploreError, match="region"):
        Edit(level=3, channels=(0,), region=(0.5, 0.0, 0.2, 1.0))


def test_feature_maps_show_the_edit_and_find_channels_finds_it(ex):
    a = ex.from_seed(2)
    maps = ex.feature_maps(a, 4)
    assert maps.shape == (32, 16, 8) and maps.dtype == np.float32
    edit = Edit(level=4, channels=(3, 11), region=(0.5, 0.5, 1.0, 1.0), multiplier=6.0)
    edited = ex.feature_maps(a, 4, [edit])
    changed = np.abs(edited - maps) > 1e-4
    assert changed[[3, 11]][:, 8:, 4:].all() and not changed[[3, 11]][:, :8, :].any()
    assert not changed[[0, 1, 2]].any()
    # find channels: with the edit planted in every image, its channels come first
    lats = [ex.from_seed(s) for s in (1, 2, 3)]
    assert sorted(E.find_channels(ex, lats, 4, (0.5, 0.5, 1.0, 1.0), n=2, edits=[edit])) == [3, 11]


def test_map_tiles_colour_sort_and_cells(ex):
    maps = ex.feature_maps(ex.from_seed(2), 3)
    rgb = colour(np.array([[[-10.0, 0.0, 10.0]]]), scale=10.0)[0, 0]
    assert rgb.tolist() == [[255, 0, 0], [255, 255, 255], [0, 255, 0]]
    png, layout = map_tiles(maps, order="magnitude")
    mags = channel_magnitudes(maps)
    assert [mags[c] for c in layout["channels"]] == sorted(mags, reverse=True)
    sheet = Image.open(io.BytesIO(png))
    assert sheet.size == sheet_size(len(maps), layout["columns"], (layout["tile_width"], layout["tile_height"]), gap=1)
    top = cell_channels(maps, 1, 2, n=5)
    assert len(top) == 5 and abs(top[0][1]) == np.abs(maps[:, 2, 1]).max()


def test_an_animation_has_the_frames_asked_and_starts_and_ends_unedited(ex):
    a = ex.from_seed(4)
    edit = Edit(level=4, channels=(0, 1, 2, 3), region=(0.2, 0.2, 0.8, 0.6), multiplier=1.0)
    frames = E.animate(ex, a, edit, 9, k=5.0)
    assert frames.shape == (9, 32, 16, 3)
    plain = ex.render([a])[0]
    assert np.array_equal(frames[0], plain) and np.array_equal(frames[-1], plain)
    peak = np.abs(frames[4].astype(int) - plain).mean()
    assert peak > np.abs(frames[2].astype(int) - plain).mean() > 0
    assert E.multipliers(5, 2.0).tolist() == [0.0, 1.0, 2.0, 1.0, 0.0]


def test_edits_are_saved_and_reloaded(ex, tmp_path):
    store = E.EditStore(tmp_path)
    edit = Edit(level=4, channels=(3, 4), region=(0.0, 0.5, 0.5, 1.0), multiplier=2.5, name="mouth")
    store.save(edit)
    assert E.EditStore(tmp_path).get("mouth") == edit
    with pytest.raises(ExploreError, match="name an edit"):
        store.save(Edit(level=4, channels=(1,)))


def test_directions_from_illustration2vec_tags(ex, tmp_path):
    from curate.score.models import install_illustration2vec
    from curate.testing.i2v import random_weights, write_caffemodel, write_tags

    assert D.installed_tagger(tmp_path / "none") is None  # not installed: no tagger, the page says so
    src = tmp_path / "src"
    src.mkdir()
    write_caffemodel(src / "illust2vec_tag_ver200.caffemodel", random_weights(16))
    write_tags(src / "tag_list.json")
    install_illustration2vec(src, tmp_path / "models", progress=False)
    tagger = D.installed_tagger(tmp_path / "models")
    tags = [tagger.tags[0], tagger.tags[3]]
    dirs = D.from_tags(ex, tagger, tags, samples=12)
    assert [d.name for d in dirs] == tags and "top 3 of 12" in dirs[0].source
    # each is the top quarter by the tag's probability against the bottom quarter
    lats = [ex.from_seed(s) for s in range(12)]
    p = tagger(ex.render(lats))[tags[1]]
    order = np.argsort(p, kind="stable")
    want = np.mean([lats[i].w for i in order[-3:]], axis=0) - np.mean([lats[i].w for i in order[:3]], axis=0)
    assert np.allclose(dirs[1].vector, want)
