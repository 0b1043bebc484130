"""The crop unit: one source image (its bytes) -> 512x256 portrait crops, their rows, or reasons.

`Cropper` is configured once with a `CropConfig` and called with one `Source` and the image's bytes; it
returns an `ImageResult` (crop rows, each crop's encoded image bytes, reason codes), never raises for
bad input and writes nothing. It decodes the image reduced for the detector (faces too small to give
a usable crop need not be found, so the detector works on a fraction of the pixels), runs the
detector, places a portrait box per face (curate.crop.geometry), and only then decodes the full image
to cut, resize and encode the crops. The detectors load lazily, in the process that calls the unit.

Detectors (`CropConfig.detector`): `lbp`, the anime-face LBP cascade; `animeface`, AnimeFace 2009
(curate.crop.animeface), which also gives landmarks and colours; `both`: each runs on the image, and
their faces are matched by overlap (IoU >= MATCH_IOU). A face both found keeps the cascade's box and
gets AnimeFace's landmarks; a face only AnimeFace found is kept (its box made cascade-sized); a face only
the cascade found is looked at again by AnimeFace in its neighbourhood (a cut-out three face widths
wide, white beyond the image, where the face is no close-up any more), which confirms it and adds its
landmarks, or leaves it unconfirmed: kept without landmarks, or rejected as `unconfirmed` with
`unconfirmed="reject"`. The measurements behind these choices are in docs/detectors.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from curate.core.errors import is_environment_error
from curate.core.image import Decoded, DecodeFailure, decode_image
from curate.crop.animeface import MIN_WINDOW, AnimeFaceDetector, Landmarks
from curate.crop.geometry import (Aligned, Box, Portrait, aligned_box, match_boxes, min_source_height, portrait_box,
                                  scale_box, smallest_useful_face)
from curate.core.workdir import LANDMARK_FIELDS, Workdir, crops_schema

# Why a face found gives no crop (counted in the stats' rejected_faces).
FACE_REASONS: dict[str, str] = {
    "too_small": "the crop would be enlarged more than --max-upscale",
    "does_not_fit": "the 2:1 box does not fit the image even at --min-k (and --pad is off)",
    "unconfirmed": "--detector both --unconfirmed reject: the cascade found it, AnimeFace did not, not even around it",
    "too_tilted": "--align --too-tilted reject: the eye line is tilted more than --max-tilt",
}
# A face whose landmarks are odd keeps its crop; the crops table says what was odd (landmark_issue).
LANDMARK_ISSUES: dict[str, str] = {
    "clamped": "a landmark fell outside the image and was moved onto its edge",
    "degenerate_eyes": "the eye centres are closer than MIN_EYE_DISTANCE face widths (or in the same place)",
}
DETECTORS = ("lbp", "animeface", "both")
MATCH_IOU = 0.3  # a cascade face and an AnimeFace face are the same face from this overlap on
# AnimeFace's square runs from brow to chin; the cascade's box, which --k was chosen for, is wider. On the
# 28 faces both found in the sample, AnimeFace's side was 0.74 of the cascade's (median; centres within
# 2% of a face width): an AnimeFace-only face is scaled by 1 / 0.74 about its centre before placing.
ANIMEFACE_TO_CASCADE = 1 / 0.74
NEIGHBOURHOOD = 3.0  # the cut-out around an unmatched cascade face, in face widths
NEIGHBOURHOOD_SIDE = 320  # ... at most this many pixels on a side (AnimeFace's cost grows with the pixels)
MIN_EYE_DISTANCE = 0.1  # eye centres closer than this x the face width are degenerate
LANDMARK_COLUMNS = [(n, t) for n, t in LANDMARK_FIELDS if n not in ("found_by", "crop_angle")]


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
    detector: str = "lbp"  # lbp | animeface | both (DETECTORS)
    unconfirmed: str = "keep"  # both: a cascade face AnimeFace cannot confirm is kept (no landmarks) or rejected
    align: bool = False  # rotate each crop with landmarks so that the eye line is level (FFHQ-style)
    max_tilt: float = 20.0  # degrees: a face tilted more is not rotated (too_tilted: unrotated or reject)
    too_tilted: str = "unrotated"

    @property
    def face_floor(self) -> int:
        """The smallest face (source pixels) the detector must find."""
        return self.min_face or smallest_useful_face(self.out_height, self.max_upscale, self.k)

    @property
    def detect_reduction(self) -> float:
        """Detector image size / source size: the window floor then matches the smallest useful face."""
        return min(1.0, self.min_size / self.face_floor)

    @property
    def animeface_reduction(self) -> float:
        """AnimeFace's image size / source size: its smallest window then matches the smallest useful face."""
        return min(1.0, MIN_WINDOW * ANIMEFACE_TO_CASCADE / self.face_floor)

    @property
    def landmarks(self) -> bool:
        """Whether AnimeFace runs (and the crops table has the landmark columns)."""
        return self.detector != "lbp"

    @property
    def table_schema(self):
        """The crops table's schema for this run (curate.core.workdir.crops_schema)."""
        return crops_schema(self.landmarks)

    def fingerprint(self) -> str:
        """A short hash of every setting that changes the output (not the cascade's path)."""
        d = asdict(self)
        d.pop("cascade")
        if d["detector"] == "lbp":  # as before the detector choice existed: LBP runs resume across it
            d.pop("detector")
            d.pop("unconfirmed")
        if not d["align"]:  # as before --align existed
            for name in ("align", "max_tilt", "too_tilted"):
                d.pop(name)
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
    """A detected face in source pixels: the cascade's level weight as confidence (None when only AnimeFace
    saw it), AnimeFace's landmarks in source pixels (None when it did not), and which detectors saw it."""

    box: Box
    confidence: float | None
    landmarks: Landmarks | None = None
    found_by: str = "lbp"


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
    aligned: int = 0  # crops rotated by --align
    crops: list[bytes] = field(default_factory=list)  # the encoded crop of each row, in order
    overlay: bytes | None = None  # the JPEG overlay sheet of this image, when asked for
    found_by: Counter = field(default_factory=Counter)  # faces by which detectors saw them (with landmarks)


def cascade_sized(box: tuple[float, float, float, float], image_size: tuple[int, int]) -> Box:
    """An AnimeFace box (source pixels) as the cascade would have drawn it: ANIMEFACE_TO_CASCADE x its side, same centre, inside the image."""
    width, height = image_size
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    side = max(w, h) * ANIMEFACE_TO_CASCADE
    x0, y0 = max(0, math.floor(cx - side / 2 + 0.5)), max(0, math.floor(cy - side / 2 + 0.5))
    x1, y1 = min(width, math.floor(cx + side / 2 + 0.5)), min(height, math.floor(cy + side / 2 + 0.5))
    return Box(x0, y0, max(1, x1 - x0), max(1, y1 - y0))


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % tuple(max(0, min(255, int(c))) for c in rgb)


def landmark_columns(face: Face, image_size: tuple[int, int]) -> dict[str, Any]:
    """A face's landmark columns for the crops table (curate.core.workdir.LANDMARK_FIELDS).

    Points outside the image are moved onto its edge (landmark_issue `clamped`); eyes closer than
    MIN_EYE_DISTANCE face widths are kept as found but flagged `degenerate_eyes` (an aligner must not
    divide by their distance). Never raises: NaN or infinite values count as outside.
    """
    lm = face.landmarks
    cols: dict[str, Any] = {"found_by": face.found_by}
    if lm is None:
        return cols | {name: None for name, _ in LANDMARK_COLUMNS}
    width, height = image_size
    points = {"left_eye": Landmarks.centre(lm.left_eye), "right_eye": Landmarks.centre(lm.right_eye),
              "nose": lm.nose, "mouth": Landmarks.centre(lm.mouth), "chin": lm.chin}
    issue = None
    for name, (x, y) in points.items():
        cx = min(max(x, 0.0), float(width)) if math.isfinite(x) else 0.0
        cy = min(max(y, 0.0), float(height)) if math.isfinite(y) else 0.0
        if (cx, cy) != (x, y):
            issue = "clamped"
        cols[f"{name}_x"], cols[f"{name}_y"] = cx, cy
    eye_distance = math.hypot(cols["left_eye_x"] - cols["right_eye_x"], cols["left_eye_y"] - cols["right_eye_y"])
    if not eye_distance >= MIN_EYE_DISTANCE * max(1.0, lm.face[2]):
        issue = "degenerate_eyes"
    cols.update(likelihood=lm.likelihood, hair_color=_hex(lm.hair), skin_color=_hex(lm.skin),
                eye_color=_hex(lm.left_eye_color), landmark_issue=issue)
    return cols


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
    """The per-image unit: (Source, image bytes) -> ImageResult. Picklable; writes nothing; the detectors load lazily per process."""

    def __init__(self, config: CropConfig, overlays: bool = False):
        self.config = config
        self.overlays = overlays  # also draw each image's overlay (ImageResult.overlay)
        self._classifier = None
        self._pid = None
        # picklable itself: libnvxs loads in the process that first detects
        self.animeface = AnimeFaceDetector() if config.landmarks else None

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
        if self.config.detector != "animeface":
            self.classifier  # noqa: B018
        if self.animeface is not None:
            self.animeface.lib  # noqa: B018  a missing libnvxs is the run's problem too
        try:
            return self._crop(src, data)
        except Exception as e:  # noqa: BLE001
            if is_environment_error(e):
                raise
            return ImageResult(src.source, reason="crop_error", detail=f"{type(e).__name__}: {e}")

    def find_faces(self, data: bytes, res: ImageResult) -> tuple[Decoded, list[Face]] | DecodeFailure:
        """One image's faces in source pixels, in crop order, and the reduced decode they were found on;
        faces rejected while finding them (unconfirmed) are counted in `res`. What bench/detectors.py scores."""
        cfg = self.config
        small = decode_image(data, cfg.max_pixels, cfg.detect_reduction if cfg.detector != "animeface"
                             else cfg.animeface_reduction)
        if isinstance(small, DecodeFailure):
            return small
        faces = self._cascade_faces(small) if cfg.detector != "animeface" else []
        if cfg.landmarks:
            seen = small
            if cfg.detector == "both" and cfg.animeface_reduction != cfg.detect_reduction:
                seen = decode_image(data, cfg.max_pixels, cfg.animeface_reduction)
                if isinstance(seen, DecodeFailure):  # the first decode worked, so this is rare: a lying file
                    return seen
            faces = self._with_animeface(faces, seen, res)
        return small, faces

    def _crop(self, src: Source, data: bytes) -> ImageResult:
        cfg = self.config
        res = ImageResult(src.source)
        found = self.find_faces(data, res)
        if isinstance(found, DecodeFailure):
            res.reason, res.detail = found.reason, found.detail
            return res
        small, faces = found
        width, height = small.source_size
        res.found_by.update(f.found_by for f in faces)
        res.faces = len(faces) + res.face_reasons["unconfirmed"]  # rejected ones were found all the same
        if not faces:
            res.reason = "no_face" if not res.faces else None
            res.overlay = self._overlay(small, faces, [])
            return res

        min_h = min_source_height(cfg.out_height, cfg.max_upscale)
        placed: list[tuple[int, Face, Portrait | str]] = []
        accepted = 0
        for index, face in enumerate(faces):
            if accepted >= cfg.max_faces:
                res.over_max_faces += 1
                continue
            p = self._place(face, (width, height))
            if isinstance(p, (Portrait, Aligned)) and p.box.h < min_h:
                p = "too_small"
            if isinstance(p, str):
                res.face_reasons[p] += 1
            else:
                accepted += 1
            placed.append((index, face, p))
        res.overlay = self._overlay(small, faces, placed)

        keep = [(i, f, p) for i, f, p in placed if not isinstance(p, str)]
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
            res.crops.append(self._encode(self._cut_quad(full, p) if isinstance(p, Aligned) else self._cut(full, p.box)))
            res.padded += p.padded
            res.aligned += isinstance(p, Aligned)
            row = {
                "crop_id": crop_id, "post_id": src.post_id, "source": src.source, "face_index": index,
                "face_x": face.box.x, "face_y": face.box.y, "face_w": face.box.w, "face_h": face.box.h,
                "crop_x": p.box.x, "crop_y": p.box.y, "crop_w": p.box.w, "crop_h": p.box.h,
                "scale": cfg.out_height / p.box.h, "confidence": face.confidence,
                "source_width": width, "source_height": height, "file": rel,
            }
            if cfg.landmarks:
                row.update(landmark_columns(face, (width, height)), crop_angle=p.angle if isinstance(p, Aligned) else 0.0)
            res.rows.append(row)
        return res

    def _place(self, face: Face, size: tuple[int, int]) -> Portrait | Aligned | str:
        """The face's crop box: rotated with --align when its landmarks allow, else upright; or a reason."""
        cfg = self.config
        if cfg.align and face.landmarks is not None:
            cols = landmark_columns(face, size)
            try:  # odd landmarks give an upright crop, never a wild rotation
                a = aligned_box((cols["left_eye_x"], cols["left_eye_y"]), (cols["right_eye_x"], cols["right_eye_y"]),
                                (cols["mouth_x"], cols["mouth_y"]), size, cfg.k, cfg.min_k, cfg.pad) \
                    if cols["landmark_issue"] is None else None
            except ValueError:  # a mouth placed so that the face has no axis
                a = None
            if isinstance(a, str) or (a is not None and abs(a.angle) <= cfg.max_tilt):
                return a
            if a is not None and cfg.too_tilted == "reject":
                return "too_tilted"
        return portrait_box(face.box, size, cfg.k, cfg.min_k, cfg.pad)

    def _cut_quad(self, decoded: Decoded, a: Aligned) -> Image.Image:
        """A rotated box (source pixels) from a maybe-reduced image, white beyond its edges, level and resized to the output size."""
        cfg = self.config
        image = decoded.image
        width, height = decoded.source_size
        fx, fy = image.width / width, image.height / height
        quad = [v for x, y in a.quad for v in (x * fx, y * fy)]
        # at the (reduced) image's own scale first, then Lanczos to the output: antialiased like _cut
        level = image.transform((max(1, round(a.box.w * fx)), max(2, round(a.box.h * fy))), Image.Transform.QUAD,
                                quad, Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
        return level.resize((cfg.out_width, cfg.out_height), Image.Resampling.LANCZOS)

    def _cascade_faces(self, small: Decoded) -> list[Face]:
        """The cascade's faces in source pixels, most confident first."""
        cfg = self.config
        width, height = small.source_size
        dw = max(1, round(width * cfg.detect_reduction))
        dh = max(1, round(height * cfg.detect_reduction))
        gray = detector_input(small.image, (dw, dh))
        sx, sy = width / dw, height / dh
        found = detect_faces(self.classifier, gray, cfg.scale_factor, cfg.min_neighbors, cfg.min_size)
        return [Face(scale_box(b, sx, sy, (width, height)), c) for b, c in found]

    def _animeface_faces(self, rgb: np.ndarray, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> list[Landmarks]:
        """AnimeFace's faces in an array, mapped to source pixels (x * sx + dx), most likely first."""
        return [f.mapped(sx, sy, dx, dy) for f in self.animeface(rgb)]

    def _with_animeface(self, cascade: list[Face], seen: Decoded, res: ImageResult) -> list[Face]:
        """AnimeFace's faces (--detector animeface), or both detectors' faces combined (both), in their order."""
        cfg = self.config
        width, height = seen.source_size
        image = seen.image
        rgb = np.asarray(image)
        found = self._animeface_faces(rgb, width / image.width, height / image.height)
        own = [Face(cascade_sized(f.face, (width, height)), None, f, "animeface") for f in found]
        if cfg.detector == "animeface":
            return own
        pairs = match_boxes([f.box for f in cascade], [f.box for f in own], MATCH_IOU)
        paired = {i: j for i, j, _ in pairs}
        confirmed, unconfirmed = [], []
        for i, face in enumerate(cascade):
            j = paired.get(i)
            lm = own[j].landmarks if j is not None else self._look_around(face.box, seen)
            if lm is not None:
                confirmed.append(Face(face.box, face.confidence, lm, "both"))
            elif cfg.unconfirmed == "reject":
                res.face_reasons["unconfirmed"] += 1
            else:
                unconfirmed.append(face)
        only_animeface = [f for j, f in enumerate(own) if j not in set(paired.values())]
        # confirmed faces first (in the cascade's order), then AnimeFace's own, then the cascade's alone
        return confirmed + only_animeface + unconfirmed

    def _look_around(self, box: Box, seen: Decoded) -> Landmarks | None:
        """AnimeFace on a cut-out around a cascade face (white beyond the image): its landmarks if it finds the face there."""
        width, height = seen.source_size
        image = seen.image
        fx, fy = image.width / width, image.height / height
        side = NEIGHBOURHOOD * max(box.w, box.h)
        cx, cy = box.x + box.w / 2, box.y + box.h / 2
        x0, y0 = cx - side / 2, cy - side / 2  # source pixels
        out = max(1, round(min(NEIGHBOURHOOD_SIDE, side * fx)))
        region = (x0 * fx, y0 * fy, (x0 + side) * fx, (y0 + side) * fy)
        # Pillow's transform reads outside the image as the fill colour: white, like padding
        cut = image.transform((out, out), Image.Transform.EXTENT, region, Image.Resampling.BILINEAR,
                              fillcolor=(255, 255, 255))
        scale = side / out
        found = self._animeface_faces(np.asarray(cut), scale, scale, x0, y0)
        pairs = match_boxes([box], [cascade_sized(f.face, (width, height)) for f in found], MATCH_IOU)
        return found[pairs[0][1]] if pairs else None

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
