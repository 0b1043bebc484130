"""curate.dataset.levels: level files read by offset arithmetic, checked once, streamed without TensorFlow."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curate.core import protobuf as pb
from curate.dataset import levels as L
from curate.dataset import schema as R
from curate.testing.records import synthetic_images, write_dataset

ROOT = Path(__file__).resolve().parents[1]


def decoded(files) -> np.ndarray:
    """Every record of the files through schema's pure-Python reader (the reference), NHWC."""
    out = []
    for p in files:
        with open(p, "rb") as f:
            out += [R.decode_example(x) for x in R.iter_records(f)]
    return np.stack(out).transpose(0, 2, 3, 1)


def shape_first_example(chw: np.ndarray, packed: bool = True, extra: bool = False) -> bytes:
    """An Example with `shape` before `data` (another writer's map order), optionally unpacked, with a label."""
    if packed:
        values = pb.len_field(1, b"".join(pb.varint(d) for d in chw.shape))
    else:
        values = b"".join(pb.key(1, pb.VARINT) + pb.varint(d) for d in chw.shape)
    shape = pb.len_field(1, pb.len_field(1, b"shape") + pb.len_field(2, pb.len_field(3, values)))
    data = pb.len_field(1, pb.len_field(1, b"data") + pb.len_field(2, pb.len_field(1, pb.len_field(1, chw.tobytes()))))
    label = pb.len_field(1, pb.len_field(1, b"label") + pb.len_field(2, pb.len_field(3, pb.len_field(1, pb.varint(7)))))
    return pb.len_field(1, shape + (label if extra else b"") + data)


def test_every_level_and_shard_reads_as_the_reference_reader(tmp_path):
    plain = R.dataset_files(write_dataset(tmp_path / "plain", 13, 32, 16, seed=3))
    sharded = R.dataset_files(write_dataset(tmp_path / "sharded", 13, 32, 16, seed=3, shard_size=5))
    assert len(sharded[5]) == 3
    for lvl, files in plain.items():
        level = L.open_level(files)
        want = decoded(files)
        h, w = 2 ** lvl, 2 ** (lvl - 1)
        assert len(level) == 13 and level.shape == (h, w, 3) and level.layout.shape == (3, h, w)
        assert level.layout.size == R.record_size(h, w) and level.layout.pixels == 12 + len(R.example_parts((3, h, w))[0])
        assert np.array_equal(level.images(np.arange(13)), want)
        order = [12, 0, 5, 5, 7]
        assert np.array_equal(level.images(order), want[order])
        assert np.array_equal(level.images(order, channels_last=False), want[order].transpose(0, 3, 1, 2))
        shards = L.open_level(sharded[lvl])
        assert len(shards) == 13 and np.array_equal(shards.images(order[::-1]), want[order[::-1]])
    assert L.open_level(plain[5]).images([]).shape == (0, 32, 16, 3)
    with pytest.raises(IndexError):
        L.open_level(plain[5]).images([13])


@pytest.mark.parametrize("packed,extra", [(True, False), (False, False), (True, True)])
def test_other_field_orders_are_found_in_the_first_records_bytes(tmp_path, packed, extra):
    imgs = synthetic_images(6, 16, 8, seed=1)
    path = tmp_path / "x-r04.tfrecords"
    path.write_bytes(b"".join(R.frame(shape_first_example(im, packed, extra)) for im in imgs))
    level = L.open_level([path])
    assert level.layout.pixels != 12 + len(R.example_parts((3, 16, 8))[0])  # not our layout
    assert np.array_equal(level.images(np.arange(6)), decoded([path]))
    assert np.array_equal(level.images(np.arange(6), channels_last=False), imgs)


def test_nvlabs_records_written_by_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    imgs = synthetic_images(9, 16, 16, seed=2)
    path = tmp_path / "tiny-r04.tfrecords"
    with tf.io.TFRecordWriter(str(path)) as writer:  # NVlabs dataset_tool.TFRecordExporter.add_image
        for im in imgs:
            ex = tf.train.Example(features=tf.train.Features(feature={
                "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=im.shape)),
                "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[im.tobytes()]))}))
            writer.write(ex.SerializeToString())
    level = L.open_level([path])
    via_tf = np.stack([x.numpy() for x in R.level_dataset([path])])
    assert np.array_equal(via_tf, imgs)
    assert np.array_equal(level.images(np.arange(9), channels_last=False), via_tf)
    # ours too, through tf.data
    files = R.dataset_files(write_dataset(tmp_path / "ours", 7, 32, 16, shard_size=3))[5]
    assert np.array_equal(L.open_level(files).images(np.arange(7), channels_last=False),
                          np.stack([x.numpy() for x in R.level_dataset(files)]))


def _one_file(tmp_path, n=10, h=16, w=8) -> tuple[Path, int]:
    files = R.dataset_files(write_dataset(tmp_path, n, h, w, min_height=h))
    return files[R.log2(h)][0], R.record_size(h, w)


def test_a_corrupt_byte_is_caught_with_its_file_and_offset(tmp_path):
    path, size = _one_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[7 * size + 100] ^= 0x01  # record 7's pixels
    path.write_bytes(bytes(data))
    with pytest.raises(R.RecordError) as e:
        L.open_level([path])
    assert (e.value.kind, e.value.offset, e.value.path) == ("bad crc", 7 * size, str(path))
    assert str(path) in str(e.value) and f"at byte {7 * size}" in str(e.value)
    level = L.open_level([path], verify=False)  # unverified reading is allowed, and verify() says the same
    with pytest.raises(R.RecordError, match=f"at byte {7 * size}"):
        level.verify()
    assert not path.with_name(path.name + ".verified").exists()

    data[7 * size + 100] ^= 0x01
    data[4 * size + 20] ^= 0x40  # record 4's Example header (the 'data' key)
    data[2 * size + 3] ^= 0x01  # record 2's length
    path.write_bytes(bytes(data))
    with pytest.raises(R.RecordError) as e:
        L.open_level([path])
    assert (e.value.kind, e.value.offset) == ("bad crc", 2 * size) and "length checksum" in str(e.value)
    data[2 * size + 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(R.RecordError) as e:
        L.open_level([path])
    assert (e.value.kind, e.value.offset) == ("bad crc", 4 * size)


def test_a_truncated_file_is_an_error(tmp_path):
    path, size = _one_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(R.RecordError) as e:
        L.open_level([path], verify=False)  # found at open: the size is no whole number of records
    assert (e.value.kind, e.value.offset) == ("truncated record", 9 * size) and str(path) in str(e.value)
    path.write_bytes(data[:5])
    with pytest.raises(R.RecordError, match="truncated record at byte 0"):
        L.open_level([path])
    path.write_bytes(b"")
    with pytest.raises(R.RecordError, match="no records"):
        L.open_level([path])


def test_records_of_different_sizes_are_not_a_level(tmp_path):
    big, small = synthetic_images(4, 16, 8), synthetic_images(1, 8, 4)
    path = tmp_path / "mixed-r04.tfrecords"
    recs = [R.encode_record(big[0]), R.encode_record(big[1]), R.encode_record(small[0]),
            R.encode_record(big[2]), R.encode_record(big[3])]
    path.write_bytes(b"".join(recs))
    with pytest.raises(R.RecordError) as e:
        L.open_level([path], verify=False)
    assert (e.value.kind, e.value.offset) == ("not fixed-size", 2 * len(recs[0])) and "147 bytes" in str(e.value)
    # the same size but another shape: only the header bytes tell, so verify() does
    recs[2] = R.encode_record(np.ascontiguousarray(big[1].reshape(3, 8, 16)))
    path.write_bytes(b"".join(recs))
    level = L.open_level([path], verify=False)
    with pytest.raises(R.RecordError) as e:
        level.verify()
    assert (e.value.kind, e.value.offset) == ("not fixed-size", 2 * len(recs[0])) and "header differs" in str(e.value)
    # shards of one level with different shapes
    other = tmp_path / "other.tfrecords"
    other.write_bytes(R.encode_record(small[0]))
    first = tmp_path / "first.tfrecords"
    first.write_bytes(recs[0])
    with pytest.raises(R.RecordError, match="other.tfrecords: not fixed-size at byte 0"):
        L.open_level([first, other])
    not_image = tmp_path / "text.tfrecords"
    not_image.write_bytes(R.frame(b"\x0a\x03abc"))
    with pytest.raises(R.RecordError, match="not an image record"):
        L.open_level([not_image])


def test_verification_is_remembered_until_the_file_changes(tmp_path):
    path, size = _one_file(tmp_path)
    sidecar = path.with_name(path.name + L.SIDECAR_SUFFIX)
    L.open_level([path])
    state = json.loads(sidecar.read_text())
    assert state["records"] == 10 and state["size"] == path.stat().st_size and state["layout"]["size"] == size
    # a flipped byte with the size and mtime put back: the sidecar still vouches for the file...
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[3 * size + 50] ^= 0x01
    with open(path, "r+b") as f:
        f.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    L.open_level([path])
    # ...a check without the cache does not, and neither does the sidecar once the mtime moves
    with pytest.raises(R.RecordError, match=f"bad crc at byte {3 * size}"):
        L.open_level([path], verify=False).verify(cache=False)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(R.RecordError, match=f"bad crc at byte {3 * size}"):
        L.open_level([path])


def test_a_read_only_folder_is_verified_without_a_sidecar(tmp_path, monkeypatch):
    path, _ = _one_file(tmp_path)

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("curate.core.atomic.write_json", refuse)
    assert len(L.open_level([path])) == 10
    assert not path.with_name(path.name + L.SIDECAR_SUFFIX).exists()


def test_the_stream_is_a_pure_function_of_position_and_covers_each_epoch(tmp_path):
    level = L.open_level(R.dataset_files(write_dataset(tmp_path, 13, 16, 8, min_height=16, shard_size=4))[4])
    n, mb, seed = 13, 4, 5
    order = L.stream_indices(n, 0, 5 * n, seed).reshape(5, n)
    for epoch in order:
        assert sorted(epoch) == list(range(n))
    assert len({tuple(e) for e in order}) == 5  # a new permutation every epoch
    assert not np.array_equal(L.stream_indices(n, 0, n, seed + 1), order[0])
    stream = L.minibatches(level, 0, mb, seed)
    unbroken = np.concatenate([next(stream) for _ in range(12)])  # 48 images, across 3 epochs
    assert np.array_equal(unbroken, level.images(order.reshape(-1)[:48]))
    for start in (3, 12, 13, 27):
        resumed = L.minibatches(level, start, mb, seed)
        got = np.concatenate([next(resumed) for _ in range(3)])
        assert got.shape == (12, 16, 8, 3) and np.array_equal(got, unbroken[start:start + 12])
    assert next(L.minibatches(level, 0, mb, seed, channels_last=False)).shape == (mb, 3, 16, 8)


def test_a_level_pickles_as_its_file_names(tmp_path):
    files = R.dataset_files(write_dataset(tmp_path, 13, 32, 16, shard_size=5))[5]
    level = L.open_level(files)
    blob = pickle.dumps(level)
    assert len(blob) < 1000
    assert np.array_equal(pickle.loads(blob).images([1, 12]), level.images([1, 12]))


def test_reading_imports_no_tensorflow(tmp_path):
    code = f"""
import sys
from curate.dataset import levels, schema
from curate.testing.records import write_dataset
files = schema.dataset_files(write_dataset({str(tmp_path)!r}, 9, 16, 8, shard_size=4))[4]
level = levels.open_level(files)
next(levels.minibatches(level, 5, 4, 0))
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))
assert not bad, bad
print('ok')
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
