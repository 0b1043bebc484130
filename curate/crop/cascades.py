"""Face-detector cascades: which file `--cascade` names, checked before any work starts.

The anime-face cascade (nagadomi's lbpcascade_animeface.xml, MIT) is not committed: `make cascades`
(`python -m curate.crop.cascades fetch`) takes it at install time from the package registry, out of the
`danbooru-utility==0.1.20` wheel, and checks its sha256. Nothing is downloaded at run time; a missing
or altered file is a one-line error that says to run `make cascades`. OpenCV's frontal-face Haar
cascade ships with OpenCV itself (cv2.data.haarcascades) and serves photo portraits.

This module imports only the standard library at load time, so the fetch runs before OpenCV is
installed and `curate --help` stays fast.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from curate.core.errors import CurateError
from curate.core.hashing import file_sha256

CASCADE_DIR = Path(__file__).resolve().parents[2] / "cascades"
ANIMEFACE_FILE = "lbpcascade_animeface.xml"
ANIMEFACE_SHA256 = "9376d30ac38db6bda2a68b88b3b76bbd7e6aa33af47f7f5c76bc88ca75f1ce30"
ANIMEFACE_SIZE = 246945
# The registry package that carries the file, and the member to take from its wheel.
ANIMEFACE_WHEEL = "danbooru-utility==0.1.20"
ANIMEFACE_MEMBER = "danbooru/lbpcascade_animeface.xml"
FRONTALFACE_FILE = "haarcascade_frontalface_default.xml"


class CascadeError(CurateError):
    """A cascade that cannot be used; the message is one line that says what to do."""


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    return file_sha256(path)


def check_animeface(path: Path) -> None:
    """Raise CascadeError unless `path` is the expected anime-face cascade, byte for byte."""
    if not path.is_file():
        raise CascadeError(f"the anime-face cascade {path} is missing; run 'make cascades' to fetch it")
    size = path.stat().st_size
    if size != ANIMEFACE_SIZE or sha256_of(path) != ANIMEFACE_SHA256:
        raise CascadeError(
            f"{path} is not the expected anime-face cascade ({size} bytes, sha256 differs); "
            "run 'make cascades' to fetch it again"
        )


def frontalface_path() -> Path:
    """OpenCV's bundled frontal-face Haar cascade."""
    import cv2

    return Path(cv2.data.haarcascades) / FRONTALFACE_FILE


def resolve_cascade(spec: str, cascade_dir: str | os.PathLike | None = None) -> Path:
    """`animeface`, `frontalface` or a path -> a checked cascade file (CascadeError if unusable)."""
    if spec == "animeface":
        path = Path(cascade_dir or CASCADE_DIR) / ANIMEFACE_FILE
        check_animeface(path)
        return path
    if spec == "frontalface":
        path = frontalface_path()
        if not path.is_file():
            raise CascadeError(f"OpenCV's frontal-face cascade is not at {path}; reinstall opencv-python-headless")
        return path
    path = Path(spec)
    if path.is_dir():
        raise CascadeError(f"cascade {spec!r} is a folder; give a cascade XML file, 'animeface' or 'frontalface'")
    if not path.is_file():
        what = "not a regular file" if path.exists() else "neither 'animeface', 'frontalface' nor an existing file"
        raise CascadeError(f"cascade {spec!r} is {what}")
    return path


def load_cascade(path: str | os.PathLike):
    """A cv2.CascadeClassifier for `path`; CascadeError if OpenCV cannot read it."""
    import cv2

    try:
        clf = cv2.CascadeClassifier(str(path))
    except (cv2.error, SystemError):
        # Not XML/YAML at all (/etc/passwd): OpenCV's parser raises (as a SystemError from the
        # constructor) instead of giving an empty classifier.
        clf = None
    if clf is None or clf.empty():
        raise CascadeError(f"OpenCV cannot load {path} as a cascade classifier (not a cascade XML file); "
                           "give a cascade XML file, 'animeface' or 'frontalface'")
    return clf


def extract_animeface(wheel: str | os.PathLike, dest: Path) -> None:
    """Take the cascade out of a danbooru-utility wheel into `dest`, atomically, checking its sha256."""
    with zipfile.ZipFile(wheel) as z:
        try:
            data = z.read(ANIMEFACE_MEMBER)
        except KeyError:
            raise CascadeError(f"{wheel} has no {ANIMEFACE_MEMBER}") from None
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != ANIMEFACE_SIZE or digest != ANIMEFACE_SHA256:
        raise CascadeError(f"{ANIMEFACE_MEMBER} in {wheel} has sha256 {digest}, expected {ANIMEFACE_SHA256}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


def fetch_animeface(cascade_dir: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """Make sure the anime-face cascade is in `cascade_dir`; (path, True if it had to be fetched)."""
    dest = Path(cascade_dir or CASCADE_DIR) / ANIMEFACE_FILE
    try:
        check_animeface(dest)
        return dest, False
    except CascadeError:
        pass
    with tempfile.TemporaryDirectory(prefix="curate-cascade-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, ANIMEFACE_WHEEL]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise CascadeError(f"could not download {ANIMEFACE_WHEEL} from the package registry: {last}")
        extract_animeface(wheels[0], dest)
    return dest, True


def main(argv: list[str] | None = None) -> int:
    """`python -m curate.crop.cascades fetch|check`: fetch (idempotent) or only check the anime-face cascade."""
    args = sys.argv[1:] if argv is None else argv
    if args not in (["fetch"], ["check"]):
        print("usage: python -m curate.crop.cascades fetch|check", file=sys.stderr)
        return 2
    try:
        if args == ["check"]:
            check_animeface(CASCADE_DIR / ANIMEFACE_FILE)
            print(f"cascades: {CASCADE_DIR / ANIMEFACE_FILE} ok")
            return 0
        path, fetched = fetch_animeface()
    except CascadeError as e:
        print(f"cascades: error: {e}", file=sys.stderr)
        return 1
    print(f"cascades: {'fetched' if fetched else 'already have'} {path} (sha256 ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
