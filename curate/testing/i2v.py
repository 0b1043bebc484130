"""Test helpers: illustration2vec-shaped caffemodel / ONNX / tag files with random weights, built here,
and an independent NumPy forward pass of the published network.

The caffemodel is encoded by protobuf's own runtime from a descriptor built with caffe.proto's field
numbers, so curate's hand-written reader is checked against a real protobuf encoder, not against itself.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from curate.score.illust2vec import ARCHITECTURE, CONV_LAYERS, MEAN_BGR, conv_shapes

PERSON = ["1girl", "solo", "1boy", "multiple girls", "2girls"]


def random_weights(width_divisor: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """He-scaled random weights in Caffe order, so activations neither vanish nor explode over 12 layers."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in conv_shapes(width_divisor).items():
        fan_in = shape[1] * 9
        w = rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
        if name == "conv6_4":
            w *= 0.05  # keep the logits in sigmoid's sensitive range
        out[name] = (w, rng.normal(0, 0.05, shape[0]).astype(np.float32))
    return out


def tag_names() -> list[str]:
    """1539 names: general tags with the person tags at known positions, then the other groups."""
    general = [f"general {i}" for i in range(512)]
    for i, t in enumerate(PERSON):
        general[10 + i * 7] = t
    return general + [f"character {i}" for i in range(512)] + [f"copyright {i}" for i in range(512)] + [
        "safe", "questionable", "explicit"]


def write_tags(path: Path, gz: bool = False) -> Path:
    data = json.dumps(tag_names()).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _caffe_classes():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="curate_test_caffe.proto", package="caffe", syntax="proto2")

    def msg(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, num, ftype, label, type_name, packed in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if packed:
                f.options.packed = True

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("BlobShape", [("dim", 1, F.TYPE_INT64, rep, None, True)])
    msg("BlobProto", [("shape", 7, F.TYPE_MESSAGE, opt, ".caffe.BlobShape", False),
                      ("data", 5, F.TYPE_FLOAT, rep, None, True),
                      ("num", 1, F.TYPE_INT64, opt, None, False), ("channels", 2, F.TYPE_INT64, opt, None, False),
                      ("height", 3, F.TYPE_INT64, opt, None, False), ("width", 4, F.TYPE_INT64, opt, None, False)])
    msg("LayerParameter", [("name", 1, F.TYPE_STRING, opt, None, False), ("type", 2, F.TYPE_STRING, opt, None, False),
                           ("bottom", 3, F.TYPE_STRING, rep, None, False), ("top", 4, F.TYPE_STRING, rep, None, False),
                           ("loss_weight", 5, F.TYPE_FLOAT, rep, None, False),
                           ("blobs", 7, F.TYPE_MESSAGE, rep, ".caffe.BlobProto", False)])
    msg("V1LayerParameter", [("bottom", 2, F.TYPE_STRING, rep, None, False), ("top", 3, F.TYPE_STRING, rep, None, False),
                             ("name", 4, F.TYPE_STRING, opt, None, False), ("type", 5, F.TYPE_INT32, opt, None, False),
                             ("blobs", 6, F.TYPE_MESSAGE, rep, ".caffe.BlobProto", False),
                             ("blobs_lr", 7, F.TYPE_FLOAT, rep, None, False)])
    msg("NetParameter", [("name", 1, F.TYPE_STRING, opt, None, False),
                         ("layers", 2, F.TYPE_MESSAGE, rep, ".caffe.V1LayerParameter", False),
                         ("input_dim", 4, F.TYPE_INT64, rep, None, False),
                         ("layer", 100, F.TYPE_MESSAGE, rep, ".caffe.LayerParameter", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{n}"))
            for n in ("NetParameter", "LayerParameter", "V1LayerParameter", "BlobProto")}


def write_caffemodel(path: Path, weights, legacy: bool = False) -> Path:
    """A caffemodel of the tag network; legacy=True writes V1 layers with 4-D num/channels/height/width blobs."""
    C = _caffe_classes()
    net = C["NetParameter"](name="illust2vec_tag")
    net.input_dim.extend([10, 3, 224, 224])
    prev = "data"
    for name, out in list(ARCHITECTURE) + [("pool6", 0), ("prob", -1)]:
        conv = name in CONV_LAYERS
        kind = "Convolution" if conv else ("Sigmoid" if name == "prob" else "Pooling")
        layer = net.layers.add() if legacy else net.layer.add()
        layer.name = name
        layer.bottom.append(prev)
        layer.top.append(name)
        if legacy:
            layer.type = {"Convolution": 4, "Pooling": 17, "Sigmoid": 19}[kind]
            if conv:
                layer.blobs_lr.extend([1.0, 2.0])  # an unknown-to-curate field it must skip
        else:
            layer.type = kind
            layer.loss_weight.append(0.0)
        if conv:
            w, b = weights[name]
            for arr, dims in ((w, w.shape), (b, (1, 1, 1, b.size) if legacy else b.shape)):
                blob = layer.blobs.add()
                if legacy:
                    blob.num, blob.channels, blob.height, blob.width = dims
                else:
                    blob.shape.dim.extend(dims)
                blob.data.extend(arr.ravel().tolist())
            if name != "conv6_4":
                relu = net.layers.add() if legacy else net.layer.add()
                relu.name = f"relu{name[4:]}"
                relu.bottom.append(name)
                relu.top.append(name)  # in place, as Caffe writes it
                relu.type = 18 if legacy else "ReLU"
        prev = name
    path.write_bytes(net.SerializeToString())
    return path


def write_onnx(path: Path, weights) -> Path:
    """An ONNX model of the tag network (NCHW) with the published node names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "data"
    for name, out in ARCHITECTURE:
        if name in CONV_LAYERS:
            w, b = weights[name]
            inits += [numpy_helper.from_array(w, f"{name}_W"), numpy_helper.from_array(b, f"{name}_b")]
            nodes.append(helper.make_node("Conv", [prev, f"{name}_W", f"{name}_b"], [name], name=name,
                                          kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]))
            if name != "conv6_4":
                nodes.append(helper.make_node("Relu", [name], [f"relu_{name}"], name=f"relu{name[4:]}"))
                prev = f"relu_{name}"
            else:
                prev = name
        else:
            nodes.append(helper.make_node("MaxPool", [prev], [name], name=name, kernel_shape=[2, 2], strides=[2, 2]))
            prev = name
    nodes.append(helper.make_node("AveragePool", [prev], ["pool6"], name="pool6", kernel_shape=[7, 7], strides=[1, 1]))
    nodes.append(helper.make_node("Sigmoid", ["pool6"], ["prob"], name="prob"))
    graph = helper.make_graph(nodes, "illust2vec_tag", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [None, 3, 224, 224])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [None, 1539, 1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------------------------------ NumPy reference

def numpy_preprocess(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 HxWx3 -> 224x224 BGR minus mean, with a hand-written half-pixel bilinear resize."""
    img = rgb.astype(np.float64)
    h, w = img.shape[:2]

    def axis(n_in, n_out):
        src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, fy = axis(h, 224)
    x0, x1, fx = axis(w, 224)
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bot = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bot * fy[:, None, None]
    return (out[..., ::-1] - MEAN_BGR).astype(np.float32)


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x HxWxC, w (out,in,3,3) Caffe order: zero pad 1, cross-correlation, as Caffe computes it."""
    h, wd, c = x.shape
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    cols = np.stack([p[i:i + h, j:j + wd] for i in range(3) for j in range(3)], axis=2)  # H,W,9,C
    k = w.transpose(2, 3, 1, 0).reshape(9, c, -1)  # (kh*kw, in, out)
    return np.einsum("hwkc,kco->hwo", cols, k, optimize=True) + b


def numpy_forward(weights, x: np.ndarray) -> np.ndarray:
    """The tag network on one preprocessed 224x224x3 input, in float64: the 1539 probabilities."""
    h = x.astype(np.float64)
    for name, out in ARCHITECTURE:
        if name in CONV_LAYERS:
            w, b = weights[name]
            h = _conv(h, w.astype(np.float64), b.astype(np.float64))
            if name != "conv6_4":
                h = np.maximum(h, 0)
        else:
            hh, ww, c = h.shape
            h = h.reshape(hh // 2, 2, ww // 2, 2, c).max(axis=(1, 3))
    logits = h.mean(axis=(0, 1))  # 7x7 average pool
    return 1 / (1 + np.exp(-logits))
