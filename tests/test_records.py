from __future__ import annotations

import io

import numpy as np
import pytest

from curate.dataset import schema as R


def nvlabs_levels(chw: np.ndarray, n: int) -> list[np.ndarray]:
    """NVlabs dataset_tool's TFRecordExporter.add_image loop, transcribed: the reference."""
    img, out = chw, []
    for lod in range(n):
        if lod:
            img = img.astype(np.float32)
            img = (img[:, 0::2, 0::2] + img[:, 0::2, 1::2] + img[:, 1::2, 0::2] + img[:, 1::2, 1::2]) * 0.25
        out.append(np.rint(img).clip(0, 255).astype(np.uint8))
    return out


def test_level_sizes_halve_down_to_the_minimum():
    assert R.level_sizes(512, 256) == [(512, 256), (256, 128), (128, 64), (64, 32), (32, 16), (16, 8), (8, 4), (4, 2)]
    assert R.level_sizes(512, 256, 8, 4)[-1] == (8, 4)
    assert R.level_sizes(32, 16, 32, 16) == [(32, 16)]
    for bad in [(500, 250, 4, 2), (512, 256, 4, 4), (512, 256, 3, 2), (8, 4, 16, 8)]:
        with pytest.raises(ValueError):
            R.level_sizes(*bad)


def test_file_names():
    assert R.level_file("p", 512) == "p-r09.tfrecords"
    assert R.level_file("p", 4) == "p-r02.tfrecords"
    assert R.level_file("p", 256, 3, 12) == "p-r08-3-of-12.tfrecords"
    assert R.labels_file("p") == "p-rxx.labels"


@pytest.mark.parametrize("shape,levels", [((3, 512, 256), 8), ((3, 64, 32), 5), ((1, 1024, 1024), 10)])
def test_pyramid_equals_nvlabs_float_arithmetic(shape, levels):
    rng = np.random.default_rng(sum(shape))
    full = rng.integers(0, 256, shape, dtype=np.uint8)
    few = rng.choice(np.array([0, 1, 2, 254, 255], np.uint8), shape)  # many exact .5 ties at every level
    for img in (full, few):
        got, want = R.pyramid(img, levels), nvlabs_levels(img, levels)
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            assert g.dtype == np.uint8 and np.array_equal(g, w)


def test_encode_decode_and_record_size():
    rng = np.random.default_rng(0)
    for shape in [(3, 8, 4), (3, 512, 256), (1, 2, 2)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        rec = R.encode_record(img)
        assert rec == R.frame(R.encode_example(img))
        assert len(rec) == R.record_size(shape[1], shape[2], shape[0])
        (payload,) = list(R.iter_records(io.BytesIO(rec)))
        assert np.array_equal(R.decode_example(payload), img)


def test_write_record_fills_exactly_its_slice_of_a_larger_buffer():
    img = np.random.default_rng(1).integers(0, 256, (3, 16, 8), dtype=np.uint8)
    n = R.record_size(16, 8)
    arena = np.full(3 * n, 0xAB, np.uint8)
    R.write_record(arena[n:2 * n], img[:, :, :])  # a strided view is accepted too
    assert arena[n:2 * n].tobytes() == R.frame(R.encode_example(img))
    assert (arena[:n] == 0xAB).all() and (arena[2 * n:] == 0xAB).all()
    with pytest.raises(ValueError, match="needs"):
        R.write_record(arena[: n - 1], img)


def test_iter_records_names_bad_crc_and_truncation():
    img = np.zeros((3, 8, 4), np.uint8)
    data = R.encode_record(img) * 3
    flipped = bytearray(data)
    flipped[len(data) // 3 + 40] ^= 0x10  # inside the second record's pixels
    with pytest.raises(R.RecordError) as e:
        list(R.iter_records(io.BytesIO(bytes(flipped))))
    assert e.value.kind == "bad crc" and e.value.offset == len(data) // 3
    with pytest.raises(R.RecordError) as e:
        list(R.iter_records(io.BytesIO(data[:-5])))
    assert e.value.kind == "truncated record"
    assert len(list(R.iter_records(io.BytesIO(data)))) == 3


def test_dataset_files_reads_both_forms(tmp_path):
    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    plain.mkdir()
    sharded.mkdir()
    for lvl in (3, 2):
        (plain / f"d-r{lvl:02d}.tfrecords").touch()
        for i in (1, 0, 2):
            (sharded / f"d-r{lvl:02d}-{i}-of-3.tfrecords").touch()
    (plain / "d-rxx.labels").touch()
    assert R.dataset_files(plain) == {3: [plain / "d-r03.tfrecords"], 2: [plain / "d-r02.tfrecords"]}
    got = R.dataset_files(sharded)
    assert list(got) == [3, 2] and [p.name for p in got[2]] == [f"d-r02-{i}-of-3.tfrecords" for i in range(3)]

    (sharded / "d-r02-2-of-3.tfrecords").unlink()
    with pytest.raises(R.LayoutError, match="missing"):
        R.dataset_files(sharded)
    (plain / "e-r02.tfrecords").touch()
    with pytest.raises(R.LayoutError, match="several"):
        R.dataset_files(plain)
    assert list(R.dataset_files(plain, name="e")) == [2]


def test_framing_and_example_are_byte_identical_to_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (3, 16, 8), dtype=np.uint8) for _ in range(3)]
    ours = tmp_path / "ours.tfrecords"
    ours.write_bytes(b"".join(R.encode_record(i) for i in imgs))
    theirs = tmp_path / "theirs.tfrecords"
    with tf.io.TFRecordWriter(str(theirs)) as w:
        for q in imgs:
            ex = tf.train.Example(features=tf.train.Features(feature={
                "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=q.shape)),
                "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[q.tobytes()]))}))
            # protobuf's default map order changes from process to process; sorted keys are stable
            w.write(ex.SerializeToString(deterministic=True))
    assert ours.read_bytes() == theirs.read_bytes()

    # and TensorFlow's reader with the trainer's parse function gives the pixels back
    back = [t.numpy() for t in R.level_dataset([ours, theirs])]
    assert len(back) == 6 and all(np.array_equal(a, b) for a, b in zip(back, imgs + imgs))
