"""AnimeFace 2009 (nagadomi's libnvxs) through ctypes: anime faces with likelihood and landmarks.

The PyPI package `animeface` 2.0.3 (Apache-2.0) ships libnvxs, with the detector's networks compiled in,
in its wheel (`animeface.libs/libnvxs-*.so`). Its own binding reads Pillow's internal image struct and
silently finds nothing with Pillow >= 11 (FORMATS.md), so we never import it: this module loads the
shared object itself and does what the binding's C code does (animeface/_nvxs.c in the sdist) from a
NumPy RGB array, which is what curate.core.image gives: BGR float matrices, nv_gray, a 5x5 Gaussian,
the Laplacian edge image, both integral images, nv_face_detect with the binding's settings (step 4,
scale 1.095, smallest window 42.592 px), then nv_face_analyze per face for the colours.

nv_face_analyze samples pixels with libnvxs' own random generator (one global state per process), so
the same face would get other colours depending on what the process analysed before. The generator
is seeded before every face: the same image gives the same colours in any worker, in any order.

Everything is in the pixels of the array given; the caller scales to source pixels. The library loads
lazily, once per process (`AnimeFaceDetector` is picklable; the handle is not).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curate.core.errors import CurateError

DISTRIBUTION = "animeface"  # the PyPI package whose wheel carries libnvxs (setup.cfg pins it)
# The binding's own detector settings (animeface/_nvxs.c): the networks were trained with them.
STEP = 4.0
SCALE_FACTOR = 1.095
MIN_WINDOW = 42.592
MAX_FACES = 256
SEED = 20090101  # nv_srand before each face's colour sampling
# libnvxs never looks for faces larger than about 0.75 of the image's short side (its scan stops when
# min(width, height) / scale <= MIN_WINDOW, with windows of 32 x scale), nor in images whose short side
# is below this: such an image has no window at all (and its filters would read past a tiny matrix).
MIN_SIDE = 64


class AnimeFaceError(CurateError):
    """libnvxs cannot be found or loaded; the message says what to install."""


class _Matrix(ctypes.Structure):
    _fields_ = [("list", ctypes.c_int), ("list_step", ctypes.c_uint), ("n", ctypes.c_int), ("m", ctypes.c_int),
                ("rows", ctypes.c_int), ("cols", ctypes.c_int), ("step", ctypes.c_int), ("alias", ctypes.c_int),
                ("v", ctypes.POINTER(ctypes.c_float))]


class _Rect(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("width", ctypes.c_int), ("height", ctypes.c_int)]


class _Position(ctypes.Structure):  # nv_face_position_t
    _fields_ = [("likelihood", ctypes.c_float), ("face", _Rect), ("left_eye", _Rect), ("right_eye", _Rect),
                ("nose", _Rect), ("mouth", _Rect), ("chin", _Rect)]


_Color = ctypes.c_float * 4  # nv_color_t: B, G, R, unused


class _Feature(ctypes.Structure):  # nv_face_feature_t
    _fields_ = [("eye_ratio", ctypes.c_float), ("face_ratio", ctypes.c_float),
                ("skin_bgr", _Color), ("skin_ec", _Color), ("hair_bgr", _Color), ("hair_ec", _Color),
                ("left_eye_bgr", _Color * 4), ("right_eye_bgr", _Color * 4), ("eye_bgr", _Color * 4),
                ("left_eye_ec", _Color * 4), ("right_eye_ec", _Color * 4), ("eye_ec", _Color * 4)]


_MatrixP = ctypes.POINTER(_Matrix)


def library_path() -> Path:
    """Where the installed `animeface` wheel keeps libnvxs (AnimeFaceError when it is not installed)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise AnimeFaceError("the AnimeFace detector needs the 'animeface' package (libnvxs): "
                             "pip install animeface==2.0.3, or make dev") from None
    for f in dist.files or []:
        if f.name.startswith("libnvxs") and ".so" in f.name:
            return Path(dist.locate_file(f))
    raise AnimeFaceError(f"the installed animeface {dist.version} has no libnvxs shared object "
                         "(a source build?); pip install --force-reinstall --only-binary :all: animeface==2.0.3")


def load_library(path: str | os.PathLike | None = None) -> ctypes.CDLL:
    """libnvxs with the prototypes this module calls."""
    path = Path(path) if path is not None else library_path()
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise AnimeFaceError(f"cannot load libnvxs from {path}: {e}") from None
    lib.nv_matrix3d_alloc.restype = _MatrixP
    lib.nv_matrix3d_alloc.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.nv_matrix_free.argtypes = [ctypes.POINTER(_MatrixP)]
    lib.nv_matrix_zero.argtypes = [_MatrixP]
    lib.nv_gray.argtypes = [_MatrixP, _MatrixP]
    lib.nv_gaussian5x5.argtypes = [_MatrixP, ctypes.c_int, _MatrixP, ctypes.c_int]
    lib.nv_laplacian1.argtypes = [_MatrixP, _MatrixP, ctypes.c_float]
    lib.nv_integral.argtypes = [_MatrixP, _MatrixP, ctypes.c_int]
    lib.nv_srand.argtypes = [ctypes.c_ulong]
    lib.nv_face_detect.restype = ctypes.c_int
    lib.nv_face_detect.argtypes = [ctypes.POINTER(_Position), ctypes.c_int, _MatrixP, _MatrixP, ctypes.POINTER(_Rect),
                                   ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                   ctypes.c_void_p, ctypes.c_float, ctypes.c_float, ctypes.c_float]
    lib.nv_face_analyze.argtypes = [ctypes.POINTER(_Feature), ctypes.POINTER(_Position), _MatrixP]
    return lib


Point = tuple[float, float]
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Landmarks:
    """One AnimeFace face: likelihood, face box and parts as (x, y, w, h) boxes or (x, y) points, colours as RGB.

    `left_eye` is the character's left eye, on the image's right (libnvxs' naming).
    """

    likelihood: float
    face: tuple[float, float, float, float]
    left_eye: tuple[float, float, float, float]
    right_eye: tuple[float, float, float, float]
    mouth: tuple[float, float, float, float]
    nose: Point
    chin: Point
    skin: RGB
    hair: RGB
    left_eye_color: RGB
    right_eye_color: RGB

    @staticmethod
    def centre(box: tuple[float, float, float, float]) -> Point:
        """The centre of an (x, y, w, h) box."""
        return box[0] + box[2] / 2, box[1] + box[3] / 2

    def mapped(self, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> Landmarks:
        """The same face in other pixels: x -> x * sx + dx, y -> y * sy + dy (a reduced image or a cut-out back to the source)."""
        def box(b):
            return (b[0] * sx + dx, b[1] * sy + dy, b[2] * sx, b[3] * sy)

        def point(p):
            return (p[0] * sx + dx, p[1] * sy + dy)

        return Landmarks(self.likelihood, box(self.face), box(self.left_eye), box(self.right_eye), box(self.mouth),
                         point(self.nose), point(self.chin), self.skin, self.hair, self.left_eye_color,
                         self.right_eye_color)


def _rect(r: _Rect) -> tuple[float, float, float, float]:
    return (float(r.x), float(r.y), float(r.width), float(r.height))


def _rgb(c) -> RGB:
    return (int(c[2]), int(c[1]), int(c[0]))


class AnimeFaceDetector:
    """RGB array (H, W, 3, uint8) -> AnimeFace faces (`Landmarks`, most likely first). Picklable; libnvxs loads lazily per process."""

    def __init__(self, library: str | os.PathLike | None = None, max_faces: int = MAX_FACES):
        self.library = str(library) if library is not None else None
        self.max_faces = max_faces
        self._lib = None
        self._pid = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_lib"] = None  # a ctypes handle does not pickle; each process loads its own
        state["_pid"] = None
        return state

    @property
    def lib(self) -> ctypes.CDLL:
        """libnvxs, loaded once in this process."""
        if self._lib is None or self._pid != os.getpid():
            self._lib = load_library(self.library)
            self._pid = os.getpid()
        return self._lib

    def __call__(self, rgb: np.ndarray) -> list[Landmarks]:
        """Every face libnvxs finds in the image, in its pixels."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"an RGB array is (height, width, 3), not {rgb.shape}")
        rows, cols = rgb.shape[:2]
        if min(rows, cols) < MIN_SIDE:
            return []
        lib = self.lib
        mats: list[_MatrixP] = []

        def alloc(n: int, r: int, c: int) -> _MatrixP:
            m = lib.nv_matrix3d_alloc(n, r, c)
            if not m:
                raise MemoryError(f"libnvxs could not allocate a {n}x{r}x{c} matrix")
            mats.append(m)
            return m

        try:
            bgr, gray = alloc(3, rows, cols), alloc(1, rows, cols)
            smooth, edge = alloc(1, rows, cols), alloc(1, rows, cols)
            gray_integral, edge_integral = alloc(1, rows + 1, cols + 1), alloc(1, rows + 1, cols + 1)
            for m in (gray, smooth, edge, gray_integral, edge_integral):
                lib.nv_matrix_zero(m)
            # nv_matrix_alloc's step is n floats (no padding), so the BGR matrix is a plain (rows, cols, 3) array
            assert bgr.contents.step == 3
            view = np.ctypeslib.as_array(bgr.contents.v, shape=(rows, cols, 3))
            view[...] = rgb[..., ::-1]
            lib.nv_gray(gray, bgr)
            lib.nv_gaussian5x5(smooth, 0, gray, 0)
            lib.nv_laplacian1(edge, smooth, 4.0)
            lib.nv_integral(gray_integral, gray, 0)
            lib.nv_integral(edge_integral, edge, 0)
            size = _Rect(0, 0, cols, rows)
            mlp = {name: ctypes.addressof(ctypes.c_char.in_dll(lib, f"nv_face_mlp_{name}"))
                   for name in ("dir", "face_00", "face_01", "face_02", "parts")}
            bagging = (ctypes.c_void_p * 3)(mlp["face_01"], mlp["face_02"], None)
            found = (_Position * self.max_faces)()
            n = lib.nv_face_detect(found, self.max_faces, gray_integral, edge_integral, ctypes.byref(size),
                                   mlp["dir"], mlp["face_00"], bagging, 2, mlp["parts"],
                                   STEP, SCALE_FACTOR, MIN_WINDOW)
            faces = []
            for i in range(n):
                pos = found[i]
                feature = _Feature()
                lib.nv_srand(SEED)
                lib.nv_face_analyze(ctypes.byref(feature), ctypes.byref(pos), bgr)
                faces.append(Landmarks(
                    likelihood=float(pos.likelihood), face=_rect(pos.face), left_eye=_rect(pos.left_eye),
                    right_eye=_rect(pos.right_eye), mouth=_rect(pos.mouth),
                    nose=(float(pos.nose.x), float(pos.nose.y)), chin=(float(pos.chin.x), float(pos.chin.y)),
                    skin=_rgb(feature.skin_bgr), hair=_rgb(feature.hair_bgr),
                    left_eye_color=_rgb(feature.left_eye_bgr[0]), right_eye_color=_rgb(feature.right_eye_bgr[0]),
                ))
        finally:
            for m in mats:
                lib.nv_matrix_free(ctypes.byref(m))
        faces.sort(key=lambda f: (-f.likelihood, f.face[1], f.face[0]))
        return faces
