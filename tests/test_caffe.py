from __future__ import annotations

import numpy as np
import pytest

from curate.score.caffe import CaffeFormatError, parse_net, read_caffemodel
from curate.score.illust2vec import CONV_LAYERS
from curate.testing.i2v import random_weights, write_caffemodel


@pytest.mark.parametrize("legacy", [False, True], ids=["layer", "V1 layers"])
def test_reads_every_blob_exactly_as_protobuf_wrote_it(tmp_path, legacy):
    weights = random_weights(32, seed=1)
    name, layers = read_caffemodel(write_caffemodel(tmp_path / "m.caffemodel", weights, legacy=legacy))
    assert name == "illust2vec_tag"
    by_name = {layer.name: layer for layer in layers}
    assert [layer.name for layer in layers if layer.blobs] == list(CONV_LAYERS)
    assert by_name["conv1_1"].type == "Convolution" and by_name["relu1_1"].type == "ReLU"
    assert by_name["pool1"].type == "Pooling" and by_name["prob"].type == "Sigmoid"
    for n in CONV_LAYERS:
        w, b = by_name[n].blobs
        np.testing.assert_array_equal(w, weights[n][0])
        assert w.shape == weights[n][0].shape
        np.testing.assert_array_equal(b.reshape(-1), weights[n][1])
        assert b.shape == ((1, 1, 1, b.size) if legacy else (b.size,))


def test_truncated_or_foreign_bytes_are_a_format_error(tmp_path):
    data = write_caffemodel(tmp_path / "m.caffemodel", random_weights(32)).read_bytes()
    with pytest.raises(CaffeFormatError):
        parse_net(data[: len(data) // 2])
    (tmp_path / "x.caffemodel").write_bytes(b"name: 'not binary'\n")
    with pytest.raises(CaffeFormatError):
        read_caffemodel(tmp_path / "x.caffemodel")
