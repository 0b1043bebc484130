"""The illustration2vec tag network (Saito & Matsui 2015) in TensorFlow/Keras, exactly as published.

Layers (rezoo/illustration2vec `illust2vec_tag.prototxt`): 3x3 convolutions, stride 1, pad 1, each
followed by ReLU; 2x2 max pools, stride 2; then a 7x7 average pool over conv6_4's 1539 maps and a
sigmoid (`prob`). The 1539 outputs are four groups (see GROUPS); their names come from `tag_list.json`.

Everything about the input lives in `preprocess()`: the published tag model resizes the RGB image
straight to 224x224 (bilinear, aspect ratio ignored, values 0-255), swaps to BGR and subtracts the BGR
mean. The reference code resized with skimage (pixel centres at +0.5, no antialiasing), which is what
`tf.image.resize(..., "bilinear", antialias=False)` does too.

`width_divisor` shrinks every layer but the last (tests run the same graph at 1/16 width, where a
NumPy reference is quick); the real network is `width_divisor=1` (47.0M parameters).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

INPUT_SIZE = 224
MEAN_BGR = np.array([164.76139251, 167.47864617, 181.13838569], dtype=np.float32)
N_OUTPUTS = 1539
GROUPS = {
    "general": (0, 512),
    "character": (512, 1024),
    "copyright": (1024, 1536),
    "rating": (1536, 1539),  # safe, questionable, explicit, in that order
}

# (name, output channels); "pool" entries are 2x2/2 max pools. Input to conv1_1 is BGR (3 channels).
ARCHITECTURE: tuple[tuple[str, int], ...] = (
    ("conv1_1", 64), ("pool1", 0),
    ("conv2_1", 128), ("pool2", 0),
    ("conv3_1", 256), ("conv3_2", 256), ("pool3", 0),
    ("conv4_1", 512), ("conv4_2", 512), ("pool4", 0),
    ("conv5_1", 512), ("conv5_2", 512), ("pool5", 0),
    ("conv6_1", 1024), ("conv6_2", 1024), ("conv6_3", 1024), ("conv6_4", N_OUTPUTS),
)
CONV_LAYERS = tuple(name for name, out in ARCHITECTURE if out)

# Danbooru's people-count tags: every picture of a person carries one of them, so the largest of
# their probabilities is the network's belief that the crop shows a person at all. "solo" is on the
# list because it is applied together with a count tag and the network is often surer of it on tight
# crops. Tags a given tag_list.json lacks are skipped (stats name the ones used); "no humans" is the
# opposite statement and is deliberately not folded in.
PERSON_TAGS = (
    "1girl", "2girls", "3girls", "4girls", "5girls", "6+girls", "multiple girls",
    "1boy", "2boys", "3boys", "4boys", "5boys", "6+boys", "multiple boys",
    "solo", "male focus", "female focus",
)


def conv_shapes(width_divisor: int = 1) -> dict[str, tuple[int, int, int, int]]:
    """Each convolution's weight shape in Caffe/ONNX order (out, in, kh, kw) at this width."""
    shapes, channels = {}, 3
    for name, out in ARCHITECTURE:
        if not out:
            continue
        if name != "conv6_4":
            out = max(1, out // width_divisor)
        shapes[name] = (out, channels, 3, 3)
        channels = out
    return shapes


def infer_width_divisor(shapes: dict[str, Sequence[int]]) -> int:
    """The width divisor whose published shapes these are; ValueError naming the first mismatch."""
    first = shapes.get("conv1_1")
    if first is None or first[0] <= 0 or 64 % first[0]:
        raise ValueError(f"conv1_1 has shape {first}; expected (64, 3, 3, 3)")
    divisor = 64 // first[0]
    expected = conv_shapes(divisor)
    for name, shape in expected.items():
        got = tuple(shapes.get(name, ()))
        if got != shape:
            raise ValueError(f"layer {name} has shape {got or 'none'}; expected {shape}")
    return divisor


def normalize_tag(tag: str) -> str:
    """tag_list.json writes tags with spaces, Danbooru with underscores: compare in one form."""
    return tag.strip().lower().replace("_", " ")


def person_indices(tags: Sequence[str]) -> list[int]:
    """Positions in the 512 general outputs of the PERSON_TAGS this tag list has."""
    wanted = {normalize_tag(t) for t in PERSON_TAGS}
    general = range(*GROUPS["general"])
    return [i for i in general if i < len(tags) and normalize_tag(tags[i]) in wanted]


def preprocess(images: Any) -> Any:
    """RGB uint8 [N,H,W,3] (any H, W) -> the network's input: 224x224 bilinear, BGR, minus the mean."""
    import tensorflow as tf

    x = tf.cast(images, tf.float32)
    x = tf.image.resize(x, (INPUT_SIZE, INPUT_SIZE), method="bilinear", antialias=False)
    x = x[..., ::-1]
    return x - tf.constant(MEAN_BGR)


def build_model(width_divisor: int = 1) -> Any:
    """The Keras model from preprocessed input [N,224,224,3] to the 1539 sigmoid probabilities."""
    import keras

    shapes = conv_shapes(width_divisor)
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="data")
    x = inputs
    for name, out in ARCHITECTURE:
        if out:
            # conv6_4 has no ReLU: its maps go straight into the average pool and the sigmoid
            # (with one, every probability would be >= 0.5; the published miku output has 0.0006).
            act = None if name == "conv6_4" else "relu"
            x = keras.layers.Conv2D(shapes[name][0], 3, padding="same", activation=act, name=name)(x)
        else:
            x = keras.layers.MaxPooling2D(2, 2, name=name)(x)
    x = keras.layers.AveragePooling2D(7, name="pool6")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Activation("sigmoid", name="prob")(x)
    return keras.Model(inputs, outputs, name="illustration2vec")


def set_caffe_weights(model: Any, weights: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Load (W in Caffe order out,in,kh,kw; bias) per layer name into the Keras model."""
    for name in CONV_LAYERS:
        w, b = weights[name]
        # Caffe and TF both cross-correlate; only the axis order differs (OIHW -> HWIO).
        model.get_layer(name).set_weights([np.transpose(w, (2, 3, 1, 0)).astype(np.float32), b.astype(np.float32)])
