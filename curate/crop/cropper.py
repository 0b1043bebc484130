"""The crop unit: one source image (its bytes) -> 512x256 portrait crops, their rows, or reasons.

`Cropper` is configured once with a `CropConfig` and called with one `Source` and the image's bytes; it
returns an `ImageResult` (crop rows, each crop's encoded image bytes, reason codes), never raises for
bad input and writes nothing. It decodes the image reduced for the detector (faces too small to give
a usable crop need not be found, so the detector works on a fraction of the pixels), runs the
cascade, places a portrait box per face (curate.crop.geometry), and only then decodes the full image
to cut, resize and encode the crops. The cascade loads lazily, in the process that calls the unit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from curate.core.errors import is_environment_error
from curate.core.image import Decoded, DecodeFailure, decode_image
from curate.crop.geometry import Box, Portrait, min_source_height, portrait_box, scale_box, smallest_useful_face
from curate.core.workdir import Workdir


FACE_REASONS = ("too_small", "does_not_fit")


CROP_OVERSAMPLE = 2.0  # a reduced decode for cutting crops keeps at least this x the output's height


@dataclass(frozen=True)
class CropConfig:
    """Everything that decides the crops; its fingerprint keys the resumable parts."""

    cascade: str  # path of the cascade XML
    cascade_sha256: str
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 24  # detector window floor, in detector pixels
    min_face: int | None = None  # smallest face to look for, source pixels (None: the smallest useful one)
    k: float = 2.5  # crop width / face width: whole head and bust (chosen on overlay sheets, docs/crop-geometry.md)
    min_k: float = 1.75  # much below this the hair is cut off
    pad: bool = False
    out_height: int = 512
    out_width: int = 256
    max_upscale: float = 2.0
    max_faces: int = 3
    fmt: str = "png"
    max_pixels: int = 89_478_485  # Pillow's own default limit
    png_compression: int = 3

    @property
    def face_floor(self) -> int:
        """The smallest face (source pixels) the detector must find."""
        return self.min_face or smallest_useful_face(self.out_height, self.max_upscale, self.k)

    @property
    def detect_reduction(self) -> float:
        """Detector image size / source size: the window floor then matches the smallest useful face."""
        return min(1.0, self.min_size / self.face_floor)

    def fingerprint(self) -> str:
        """A short hash of every setting that changes the output (not the cascade's path)."""
        d = asdict(self)
        d.pop("cascade")
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Source:
    """One source image: its path on disk, its name in the tables, and its post id (None for a folder).

    `reason` is set when listing the folder already showed the entry cannot be read as a file (a FIFO,
    a folder named like an image, a dangling symlink): the runner records that reason and never opens it.
    """

    path: str
    source: str
    crop_base: str  # crop ids are f"{crop_base}_{face_index}"
    post_id: int | None = None
    reason: str | None = None  # curate.crop.runner.LISTING_REASONS
    detail: str = ""


@dataclass
class Face:
    """A detected face in source pixels, with the cascade's level weight as confidence."""

    box: Box
    confidence: float


@dataclass
class ImageResult:
    """What one image gave: crop rows and their encoded images, its own reason (a decode failure or no_face), per-face reasons."""

    source: str
    reason: str | None = None
    detail: str = ""
    faces: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    face_reasons: Counter = field(default_factory=Counter)
    over_max_faces: int = 0
    padded: int = 0
    crops: list[bytes] = field(default_factory=list)  # the encoded crop of each row, in order
    overlay: bytes | None = None  # the JPEG overlay sheet of this image, when asked for


def detect_faces(classifier, gray: np.ndarray, scale_factor: float, min_neighbors: int, min_size: int) -> list[tuple[Box, float]]:
    """Faces in an equalised greyscale image, most confident first (ties: top-left first)."""
    rects, _levels, weights = classifier.detectMultiScale3(
        gray, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_size, min_size),
        outputRejectLevels=True,
    )
    faces = [(Box(*map(int, r)), float(w)) for r, w in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1))]
    faces.sort(key=lambda f: (-f[1], f[0].y, f[0].x, f[0].w))
    return faces


def detector_input(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """RGB image -> greyscale at `size` (area-averaged), histogram-equalised: what the cascade sees."""
    import cv2

    gray = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
    if (gray.shape[1], gray.shape[0]) != size:
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return cv2.equalizeHist(gray)


class Cropper:
    """The per-image unit: (Source, image bytes) -> ImageResult. Picklable; writes nothing; the cascade loads lazily per process."""

    def __init__(self, config: CropConfig, overlays: bool = False):
        self.config = config
        self.overlays = overlays  # also draw each image's overlay (ImageResult.overlay)
        self._classifier = None
        self._pid = None

    def __getstate__(self):
        # cv2.CascadeClassifier does not pickle; each process loads its own.
        state = self.__dict__.copy()
        state["_classifier"] = None
        state["_pid"] = None
        return state

    @property
    def classifier(self):
        """The cascade, loaded once in this process."""
        if self._classifier is None or self._pid != os.getpid():
            from curate.crop.cascades import load_cascade

            self._classifier = load_cascade(self.config.cascade)
            self._pid = os.getpid()
        return self._classifier

    def __call__(self, src: Source, data: bytes) -> ImageResult:
        """Detect, place and cut every face of one image, given its bytes (`src` names it; its path is not read).

        Bad input has its own reason codes (curate.core.image). Anything else that goes wrong with one
        image (a file that defeats the decoder in a new way, or a bug) becomes reason `crop_error` with
        the exception in the detail and no crops, so one image never costs the run. The cascade is
        loaded outside this guard: a broken cascade is the run's problem, not an image's. So is the
        machine's (out of memory, no file descriptors left: curate.core.errors.is_environment_error):
        that error is raised, so that the run stops and a resume redoes this image.
        """
        self.classifier  # noqa: B018
        try:
            return self._crop(src, data)
        except Exception as e:  # noqa: BLE001
            if is_environment_error(e):
                raise
            return ImageResult(src.source, reason="crop_error", detail=f"{type(e).__name__}: {e}")

    def _crop(self, src: Source, data: bytes) -> ImageResult:
        cfg = self.config
        res = ImageResult(src.source)
        small = decode_image(data, cfg.max_pixels, cfg.detect_reduction)
        if isinstance(small, DecodeFailure):
            res.reason, res.detail = small.reason, small.detail
            return res
        width, height = small.source_size
        dw = max(1, round(width * cfg.detect_reduction))
        dh = max(1, round(height * cfg.detect_reduction))
        gray = detector_input(small.image, (dw, dh))
        sx, sy = width / dw, height / dh
        found = detect_faces(self.classifier, gray, cfg.scale_factor, cfg.min_neighbors, cfg.min_size)
        faces = [Face(scale_box(b, sx, sy, (width, height)), c) for b, c in found]
        res.faces = len(faces)
        if not faces:
            res.reason = "no_face"
            res.overlay = self._overlay(small, faces, [])
            return res

        min_h = min_source_height(cfg.out_height, cfg.max_upscale)
        placed: list[tuple[int, Face, Portrait | str]] = []
        accepted = 0
        for index, face in enumerate(faces):
            if accepted >= cfg.max_faces:
                res.over_max_faces += 1
                continue
            p = portrait_box(face.box, (width, height), cfg.k, cfg.min_k, cfg.pad)
            if isinstance(p, Portrait) and p.box.h < min_h:
                p = "too_small"
            if isinstance(p, str):
                res.face_reasons[p] += 1
            else:
                accepted += 1
            placed.append((index, face, p))
        res.overlay = self._overlay(small, faces, placed)

        keep = [(i, f, p) for i, f, p in placed if isinstance(p, Portrait)]
        if not keep:
            return res
        # Big crops need not the full resolution: the JPEG decoder may scale down (DCT scaling) as
        # long as every crop keeps at least CROP_OVERSAMPLE x the output's pixels before Lanczos.
        reduce_to = min(1.0, max(CROP_OVERSAMPLE * cfg.out_height / p.box.h for _, _, p in keep))
        full = decode_image(data, cfg.max_pixels, reduce_to)
        if isinstance(full, DecodeFailure):  # the reduced decode worked, so this is rare: a lying file
            res.reason, res.detail = full.reason, full.detail
            return res
        for index, face, p in keep:
            crop_id = f"{src.crop_base}_{index}"
            rel = Workdir.crop_file(crop_id, "jpg" if cfg.fmt == "jpg" else "png")
            res.crops.append(self._encode(self._cut(full, p.box)))
            res.padded += p.padded
            res.rows.append({
                "crop_id": crop_id, "post_id": src.post_id, "source": src.source, "face_index": index,
                "face_x": face.box.x, "face_y": face.box.y, "face_w": face.box.w, "face_h": face.box.h,
                "crop_x": p.box.x, "crop_y": p.box.y, "crop_w": p.box.w, "crop_h": p.box.h,
                "scale": cfg.out_height / p.box.h, "confidence": face.confidence,
                "source_width": width, "source_height": height, "file": rel,
            })
        return res

    def _cut(self, decoded: Decoded, box: Box) -> Image.Image:
        """The box (source pixels) from a maybe-reduced image, white beyond its edges, resized to the output size."""
        cfg = self.config
        image = decoded.image
        width, height = decoded.source_size
        # Per axis: a JPEG decoded at 1/2, 1/4 or 1/8 is ceil(side / n) pixels, so the two axes are
        # reduced by slightly different factors (using one for both ran past the image's edge).
        fx, fy = image.width / width, image.height / height
        x0, y0 = max(0, box.x), max(0, box.y)
        x1, y1 = min(width, box.x + box.w), min(height, box.y + box.h)
        size = (cfg.out_width, cfg.out_height)
        # Lanczos with Pillow's support scaled to the reduction: proper antialiasing when shrinking;
        # resize(box=) reads the region in place, with sub-pixel edges on a reduced image.
        if (x0, y0, x1, y1) == (box.x, box.y, box.x + box.w, box.y + box.h):
            region = (x0 * fx, y0 * fy, min(image.width, x1 * fx), min(image.height, y1 * fy))
            return image.resize(size, Image.Resampling.LANCZOS, box=region)
        region = image.crop((round(x0 * fx), round(y0 * fy), min(image.width, round(x1 * fx)),
                             min(image.height, round(y1 * fy))))
        canvas = Image.new("RGB", (round(box.w * fx), round(box.h * fy)), (255, 255, 255))
        canvas.paste(region, (round((x0 - box.x) * fx), round((y0 - box.y) * fy)))
        return canvas.resize(size, Image.Resampling.LANCZOS)

    def _encode(self, image: Image.Image) -> bytes:
        buf = io.BytesIO()
        if self.config.fmt == "jpg":
            image.save(buf, "JPEG", quality=95, subsampling=0)
        else:
            image.save(buf, "PNG", compress_level=self.config.png_compression)
        return buf.getvalue()

    def _overlay(self, small: Decoded, faces: list[Face], placed: list) -> bytes | None:
        if not self.overlays:
            return None
        from curate.crop.overlays import draw_overlay

        return draw_overlay(small, faces, placed)
