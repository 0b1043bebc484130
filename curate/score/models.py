"""The models folder: downloading, converting and finding pretrained weights.

    $CURATE_MODELS (default ~/.cache/curate/models)/
      illustration2vec/
        illustration2vec.weights.h5   the Keras weights, converted once from Caffe or ONNX
        tags.json                     the 1539 output names (tag_list.json)
        manifest.json                 sha256 and size of both, where they came from, the width
      downloads/                      release assets while (and after) they download; *.part = partial

Conversion happens once, at install; scoring only reads the folder and never touches the network.
The manifest's sha256 is checked on every load, so a truncated or edited weights file is refused.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate import __version__
from curate.core.atomic import write_bytes, write_json
from curate.core.hashing import file_sha256
from curate.core.http import TRANSIENT, Client
from curate.score.illust2vec import CONV_LAYERS, N_OUTPUTS, conv_shapes, infer_width_divisor
from curate.core.errors import CurateError

MODEL = "illustration2vec"
WEIGHTS_FILE = "illustration2vec.weights.h5"


@dataclass(frozen=True)
class Asset:
    """A file published by a model's authors: where it is, and what we know about it."""

    name: str
    url: str
    sha256: str | None = None  # None: not published; the downloaded file's hash is recorded instead
    size: int | None = None


# Release assets as linked by rezoo/illustration2vec get_models.sh (v2.0.0) and by the ONNX conversion's
# own get_models.sh (kivantium/illustration2vec v2.1.0). Neither project publishes checksums; the file is
# checked structurally (the published layer shapes, 1539 tag names) when it is converted.
ASSETS: dict[str, tuple[Asset, ...]] = {
    "caffe": (
        Asset("illust2vec_tag_ver200.caffemodel",
              "https://github.com/rezoo/illustration2vec/releases/download/v2.0.0/illust2vec_tag_ver200.caffemodel"),
        Asset("tag_list.json.gz", "https://github.com/rezoo/illustration2vec/releases/download/v2.0.0/tag_list.json.gz"),
        Asset("illust2vec_tag.prototxt",
              "https://github.com/rezoo/illustration2vec/releases/download/v2.0.0/illust2vec_tag.prototxt"),
    ),
    "onnx": (
        Asset("illust2vec_tag_ver200.onnx",
              "https://github.com/kivantium/illustration2vec/releases/download/v2.1.0/illust2vec_tag_ver200.onnx"),
        Asset("tag_list.json.gz", "https://github.com/kivantium/illustration2vec/releases/download/v2.1.0/tag_list.json.gz"),
    ),
}


class ModelError(CurateError):
    """A model cannot be installed or loaded; the message says what to do."""


def models_dir(override: str | os.PathLike | None = None) -> Path:
    """The models folder: the argument, else $CURATE_MODELS, else ~/.cache/curate/models (XDG aware)."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("CURATE_MODELS"):
        return Path(os.environ["CURATE_MODELS"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "curate" / "models"




# ---------------------------------------------------------------------------------------------- download

class DownloadError(ModelError):
    """A download failed (no network, HTTP error, or a file that does not match what is known)."""


def download(url: str, dest: Path, *, sha256: str | None = None, size: int | None = None,
             progress: bool = True, timeout: float = 30.0, client: Client | None = None) -> Path:
    """Fetch `url` to `dest`, resuming a `dest.part` left by an earlier try (HTTP Range); verify; return dest."""
    from tqdm import tqdm

    dest = Path(dest)
    if dest.exists() and _matches(dest, sha256, size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    # no rate limit (a handful of files from a CDN); a few retries for a dropped connection
    client = client or Client(rate=0, retries=3, backoff=1.0, timeout=timeout, user_agent=f"curate/{__version__}")
    with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress,
              dynamic_ncols=True) as bar:
        def on_total(total: int | None, have: int) -> None:
            bar.reset(total=total if total is not None else size)
            bar.update(have)

        try:
            client.download(url, part, on_total=on_total, on_block=bar.update)
        except urllib.error.HTTPError as e:
            if not (e.code == 416 and part.exists()):  # 416: the part file is already whole
                raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise DownloadError(
                f"cannot download {url} ({e.reason}); without network, fetch the files elsewhere and use --from FILE_OR_DIR"
            ) from None
        except (OSError, *TRANSIENT) as e:
            if not part.exists():
                raise DownloadError(f"cannot download {url} ({e}); without network, fetch the files elsewhere "
                                    "and use --from FILE_OR_DIR") from None
            raise DownloadError(f"download of {url} broke off ({e}); run the same command again to resume") from None
    return _finish(part, dest, sha256, size, url)


def _matches(path: Path, sha256: str | None, size: int | None) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return sha256 is None or file_sha256(path) == sha256


def _finish(part: Path, dest: Path, sha256: str | None, size: int | None, url: str) -> Path:
    got = part.stat().st_size
    if size is not None and got != size:
        if got > size:
            part.unlink()
        raise DownloadError(f"{url}: got {got} bytes, expected {size}" + ("; run again to resume" if got < size else ""))
    if sha256 is not None and (digest := file_sha256(part)) != sha256:
        part.unlink()
        raise DownloadError(f"{url}: sha256 {digest} does not match the published {sha256}; the file was removed")
    os.replace(part, dest)
    return dest


def download_assets(variant: str, folder: Path, *, mirror: str | None = None, progress: bool = True) -> Path:
    """Download one variant's release assets into `folder` (resumable); `mirror` replaces each URL's directory."""
    folder.mkdir(parents=True, exist_ok=True)
    for asset in ASSETS[variant]:
        url = f"{mirror.rstrip('/')}/{asset.name}" if mirror else asset.url
        download(url, folder / asset.name, sha256=asset.sha256, size=asset.size, progress=progress)
    return folder


# ---------------------------------------------------------------------------------------------- weights

def caffe_weights(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The illustration2vec convolutions (W out,in,kh,kw; bias) from a .caffemodel, by layer name."""
    from curate.score.caffe import CaffeFormatError, read_caffemodel

    try:
        _, layers = read_caffemodel(path)
    except (CaffeFormatError, OSError) as e:
        raise ModelError(f"{path} is not a readable caffemodel: {e}") from None
    found = {layer.name: layer.blobs for layer in layers if layer.name in CONV_LAYERS and layer.blobs}
    return _check_weights(found, str(path))


def onnx_weights(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The illustration2vec convolutions from an ONNX file: its Conv nodes in graph order, shape-checked."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError, ValueError, OSError ... for a bad file
        raise ModelError(f"{path} is not a readable ONNX model: {e}") from None
    init = {t.name: t for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    # Converters rename nodes (CoreML -> ONNX did for the published file), so match by position and
    # let the shape check catch a different network; published names, where present, must agree.
    if len(convs) != len(CONV_LAYERS):
        raise ModelError(f"{path}: {len(convs)} Conv nodes, the illustration2vec tag network has {len(CONV_LAYERS)}")
    found = {}
    for name, node in zip(CONV_LAYERS, convs):
        if node.name in CONV_LAYERS and node.name != name:
            raise ModelError(f"{path}: Conv node {node.name!r} is where {name} should be")
        try:
            blobs = [numpy_helper.to_array(init[i]) for i in node.input[1:3]]
        except KeyError as e:
            raise ModelError(f"{path}: Conv {node.name!r} takes {e} which is not a stored weight") from None
        found[name] = blobs
    return _check_weights(found, str(path))


def _check_weights(found: dict[str, list[np.ndarray]], source: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    missing = [n for n in CONV_LAYERS if n not in found or len(found[n]) < 2]
    if missing:
        raise ModelError(f"{source}: no weights for layer(s) {', '.join(missing)}; is it the illustration2vec *tag* model?")
    try:
        # Legacy Caffe blobs are 4-D (1,1,1,N for a bias): take shapes from the element counts.
        shapes = {n: tuple(found[n][0].shape) for n in CONV_LAYERS}
        divisor = infer_width_divisor(shapes)
    except ValueError as e:
        raise ModelError(f"{source}: {e}") from None
    expected = conv_shapes(divisor)
    out = {}
    for n in CONV_LAYERS:
        w, b = found[n][0], found[n][1].reshape(-1)
        if b.shape != (expected[n][0],):
            raise ModelError(f"{source}: layer {n} bias has {b.size} values; expected {expected[n][0]}")
        out[n] = (np.asarray(w, np.float32), np.asarray(b, np.float32))
    return out


def read_tags(path: str | os.PathLike) -> list[str]:
    """The 1539 output names from tag_list.json (or .json.gz)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        tags = json.loads(raw)
    except ValueError as e:
        raise ModelError(f"{path} is not JSON: {e}") from None
    if not isinstance(tags, list) or len(tags) != N_OUTPUTS or not all(isinstance(t, str) for t in tags):
        raise ModelError(f"{path}: expected a JSON list of {N_OUTPUTS} tag names")
    return tags


def find_sources(path: Path) -> tuple[Path, Path]:
    """(weights file, tag list) from a file or folder given to --from."""
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*tag*.caffemodel")) + sorted(path.glob("*.caffemodel")) \
            + sorted(path.glob("*tag*.onnx")) + sorted(path.glob("*.onnx"))
        if not candidates:
            raise ModelError(f"{path} holds no .caffemodel or .onnx file; expected illust2vec_tag_ver200.caffemodel")
        weights, folder = candidates[0], path
    elif path.is_file():
        weights, folder = path, path.parent
    else:
        raise ModelError(f"{path} does not exist")
    for name in ("tag_list.json", "tag_list.json.gz", "tags.json"):
        if (folder / name).is_file():
            return weights, folder / name
    raise ModelError(f"no tag_list.json (or tag_list.json.gz) beside {weights}; it comes with the release")


def install_illustration2vec(source: Path, root: Path, progress: bool = True) -> dict[str, Any]:
    """Convert the weights found at `source` (file or folder) into the models folder; return the manifest."""
    weights_src, tags_src = find_sources(source)
    kind = "onnx" if weights_src.suffix.lower() == ".onnx" else "caffe"
    tags = read_tags(tags_src)
    weights = onnx_weights(weights_src) if kind == "onnx" else caffe_weights(weights_src)
    divisor = infer_width_divisor({n: w.shape for n, (w, _) in weights.items()})

    from curate.score.illust2vec import build_model, set_caffe_weights

    model = build_model(divisor)
    set_caffe_weights(model, weights)
    folder = root / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    # Keras insists on the .weights.h5 suffix, so write into a scratch folder and rename into place.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".install-") as tmp:
        scratch = Path(tmp) / WEIGHTS_FILE
        model.save_weights(scratch)
        os.replace(scratch, folder / WEIGHTS_FILE)
    write_bytes(folder / "tags.json", (json.dumps(tags, ensure_ascii=False) + "\n").encode())
    manifest = {
        "model": MODEL,
        "format": "keras-weights-h5",
        "weights": WEIGHTS_FILE,
        "weights_sha256": file_sha256(folder / WEIGHTS_FILE),
        "weights_bytes": (folder / WEIGHTS_FILE).stat().st_size,
        "tags": "tags.json",
        "tags_sha256": file_sha256(folder / "tags.json"),
        "width_divisor": divisor,
        "parameters": int(sum(w.size + b.size for w, b in weights.values())),
        "source": {
            "kind": kind,
            "weights": str(weights_src.resolve()),
            "weights_sha256": file_sha256(weights_src),
            "weights_bytes": weights_src.stat().st_size,
            "tags": str(tags_src.resolve()),
        },
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "curate_version": __version__,
    }
    write_json(folder / "manifest.json", manifest)
    return manifest


def installed(root: Path) -> dict[str, Any] | None:
    """The manifest of the installed illustration2vec, or None when it is not installed."""
    path = root / MODEL / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        return None
    return manifest if (root / MODEL / manifest.get("weights", WEIGHTS_FILE)).is_file() else None


def list_models(root: Path) -> list[dict[str, Any]]:
    """One entry per model known to curate: its name, whether installed, and its manifest."""
    return [{"name": MODEL, "installed": installed(root) is not None, "manifest": installed(root), "folder": str(root / MODEL)}]


def load_illustration2vec(root: Path, verify: bool = True) -> tuple[Any, list[str], dict[str, Any]]:
    """(Keras model with the installed weights, tag names, manifest); ModelError when absent or altered."""
    manifest = installed(root)
    if manifest is None:
        raise ModelError(f"illustration2vec is not installed in {root}; run 'curate models install illustration2vec'")
    folder = root / MODEL
    weights = folder / manifest["weights"]
    if verify and file_sha256(weights) != manifest["weights_sha256"]:
        raise ModelError(f"{weights} does not match the sha256 in its manifest; reinstall with 'curate models install illustration2vec'")
    from curate.score.illust2vec import build_model

    model = build_model(int(manifest.get("width_divisor", 1)))
    model.load_weights(weights)
    tags = json.loads((folder / manifest["tags"]).read_text())
    return model, tags, manifest

