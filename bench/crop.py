"""Benchmark: `curate crop` against danbooru-utility's face path and against the limit.

Builds (once, cached) a seeded corpus from the real Danbooru sample: each image upscaled (Lanczos)
to a long side between 1200 and 3000 px, the size of Danbooru originals, saved as JPEG q90. Then
times, in alternating rounds, each in a fresh process with the same worker count:

  danbooru-utility  0.1.20's `detect_faces()`, called the way its CLI (`--faces`) calls it: one task
                    per image over a process pool, its defaults (face_scale 2.5, img_size 256). It runs
                    in its own virtualenv (created here under the cache folder with the package from
                    the registry: it needs full opencv-python, which must not meet the project's
                    headless build). Same cascade: the copy inside its wheel, byte-identical to ours.
  limit             a bare loop: decode (reduced, as curate does) + greyscale + equalizeHist +
                    detectMultiScale, nothing else: the cost floor of curate's own detection.
  detector-alone    detectMultiScale only, on images decoded before the clock starts: what any
                    implementation of the same detection would cost with decoding free. Its ratio to
                    danbooru-utility is the ceiling for curate's ratio at these settings.
  curate crop       run_crop() with the default settings, PNG crops, table and stats written.

    python bench/crop.py                    # 100 images, 3 rounds, one worker per core
    python bench/crop.py --images 40 --rounds 1

Timings on a shared VM are noisy: the median of the rounds is reported, and each round with it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT.parent / "shared" / "data" / "danbooru-sample"
DU_SPEC = ["danbooru-utility==0.1.20", "opencv-python<5"]  # OpenCV 5 has no CascadeClassifier (FORMATS.md)


def make_corpus(dest: Path, n: int, seed: int) -> list[Path]:
    """n JPEGs (q90) upscaled from the sample to a seeded long side in [1200, 3000]; cached."""
    from PIL import Image

    done = dest / "done.json"
    if done.exists():
        return [dest / p for p in json.loads(done.read_text())]
    images = sorted((SAMPLE / "original").glob("*/*.jpg"))
    if not images:
        sys.exit(f"bench/crop.py: the Danbooru sample is not at {SAMPLE}")
    rng = random.Random(seed)
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    print(f"building the corpus: {n} images in {dest} ...", flush=True)
    for i in range(n):
        src = images[i % len(images)]
        side = rng.randint(1200, 3000)
        with Image.open(src) as im:
            im = im.convert("RGB")
            f = side / max(im.size)
            big = im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.LANCZOS)
        name = f"{i:04d}-{src.stem}.jpg"
        big.save(dest / name, "JPEG", quality=90)
        names.append(name)
    done.write_text(json.dumps(names))
    return [dest / p for p in names]


def danbooru_utility_venv(cache: Path) -> tuple[Path | None, str]:
    """The bench's own virtualenv with danbooru-utility; (python, '') or (None, why it failed)."""
    venv = cache / "venv-danbooru-utility"
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import cv2, danbooru.danbooru_utility as d; cv2.CascadeClassifier; print(cv2.__version__)"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py, ""
    print(f"installing {' '.join(DU_SPEC)} into {venv} ...", flush=True)
    steps = [[shutil.which("python3") or sys.executable, "-m", "venv", str(venv)],
             [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", *DU_SPEC]]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            return None, f"`{' '.join(cmd)}` failed: {tail}"
    done = subprocess.run(probe, capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"danbooru-utility does not import: {done.stderr.strip().splitlines()[-1:]}"
    return py, ""


_DU_DRIVER = textwrap.dedent("""
    # Runs inside danbooru-utility's virtualenv: its CLI's --faces path, one task per image, a pool
    # of `workers` processes, its defaults (img_size 256, face_scale 2.5), overwrite on.
    import json, multiprocessing as mp, os, sys, time
    from danbooru import danbooru_utility as du
    files, out, workers = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    tasks = [(f, os.path.basename(f), out, out + "-links", 256, 2.5, True) for f in files]
    t = time.perf_counter()
    with mp.Pool(workers) as pool:
        crops = sum(pool.starmap(du.detect_faces, tasks, chunksize=1))
    print(json.dumps({"seconds": time.perf_counter() - t, "crops": crops}))
""")


def run_danbooru_utility(py: Path, files: list[Path], workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-du-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        done = subprocess.run([str(py), "-c", _DU_DRIVER, json.dumps([str(f) for f in files]), str(out), str(workers)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        res = json.loads(done.stdout.strip().splitlines()[-1])
        # Under current Pillow its resize_contain() gives RGBA, which JPEG cannot store: the save fails
        # after all the work that is timed (decode, detect, crop, resize); it prints and goes on.
        res["failed_saves"] = done.stdout.count("cannot write mode RGBA as JPEG")
        return res


_LIMIT = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[4])
    import cv2, numpy as np
    from PIL import Image
    from curate.crop import CropConfig
    from curate.core.pool import ordered_map

    files, cascade, workers = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    reduction = CropConfig(cascade=cascade, cascade_sha256="").detect_reduction
    clf = None

    def detect(path):
        global clf
        if clf is None:
            clf = cv2.CascadeClassifier(cascade)
        with Image.open(path) as im:
            w, h = im.size
            im.draft(None, (int(w * reduction), int(h * reduction)))
            gray = cv2.cvtColor(np.asarray(im.convert("RGB")), cv2.COLOR_RGB2GRAY)
        gray = cv2.equalizeHist(cv2.resize(gray, (round(w * reduction), round(h * reduction)), interpolation=cv2.INTER_AREA))
        return len(clf.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24)))

    t = time.perf_counter()
    faces = sum(ordered_map(detect, files, workers))
    print(json.dumps({"seconds": time.perf_counter() - t, "faces": faces}))
""")


_DETECTOR = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[4])
    import cv2, numpy as np
    from PIL import Image
    from curate.crop import CropConfig
    from curate.core.pool import ordered_map

    files, cascade, workers = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    reduction = CropConfig(cascade=cascade, cascade_sha256="").detect_reduction
    grays = []  # decoded, reduced and equalised before the clock starts; the forked workers inherit them
    for path in files:
        with Image.open(path) as im:
            w, h = im.size
            gray = cv2.cvtColor(np.asarray(im.convert("RGB")), cv2.COLOR_RGB2GRAY)
        size = (round(w * reduction), round(h * reduction))
        grays.append(cv2.equalizeHist(cv2.resize(gray, size, interpolation=cv2.INTER_AREA)))
    clf = None

    def detect(i):
        global clf
        if clf is None:
            clf = cv2.CascadeClassifier(cascade)
        return len(clf.detectMultiScale(grays[i], scaleFactor=1.1, minNeighbors=5, minSize=(24, 24)))

    t = time.perf_counter()
    faces = sum(ordered_map(detect, range(len(grays)), workers))
    print(json.dumps({"seconds": time.perf_counter() - t, "faces": faces}))
""")


def run_detector(files: list[Path], cascade: Path, workers: int) -> dict:
    """detectMultiScale alone, on images decoded before timing: no implementation of this detection beats it."""
    done = subprocess.run([sys.executable, "-c", _DETECTOR, json.dumps([str(f) for f in files]), str(cascade),
                           str(workers), str(ROOT)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_limit(files: list[Path], cascade: Path, workers: int) -> dict:
    done = subprocess.run([sys.executable, "-c", _LIMIT, json.dumps([str(f) for f in files]), str(cascade), str(workers),
                           str(ROOT)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


_CURATE = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[4])
    from curate.crop.cascades import sha256_of
    from curate.crop import CropConfig
    from curate.crop.runner import open_sources, run_crop
    folder, cascade, workers, _, out, max_upscale = sys.argv[1:7]
    sources, _ = open_sources(folder)
    t = time.perf_counter()
    config = CropConfig(cascade=cascade, cascade_sha256=sha256_of(cascade), max_upscale=float(max_upscale))
    stats = run_crop(sources, out, config, workers=int(workers), progress=False)
    print(json.dumps({"seconds": time.perf_counter() - t, "faces": stats["faces"], "crops": stats["crops"]}))
""")


def run_curate(folder: Path, cascade: Path, workers: int, max_upscale: float = 2.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-curate-") as tmp:
        done = subprocess.run([sys.executable, "-c", _CURATE, str(folder), str(cascade), str(workers), str(ROOT),
                               str(Path(tmp) / "work"), str(max_upscale)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100, help="corpus size (the 50 sample images, cycled)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    ap.add_argument("--workers", type=int, default=None, help="processes for every method (default: one per core)")
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "curate-bench")
    args = ap.parse_args()

    from curate.crop.cascades import ANIMEFACE_SHA256, resolve_cascade, sha256_of

    cascade = resolve_cascade("animeface")
    folder = args.cache / f"crop-corpus-n{args.images}-seed{args.seed}"
    files = make_corpus(folder, args.images, args.seed)
    workers = args.workers or len(os.sched_getaffinity(0))
    mpx = sum(_pixels(f) for f in files) / 1e6
    print(f"corpus: {len(files)} JPEGs q90, 1200-3000 px long side, {mpx / len(files):.1f} MP mean; "
          f"{os.cpu_count()} cores, workers={workers}, rounds={args.rounds}")

    du_py, why = danbooru_utility_venv(args.cache)
    if du_py is not None:
        du_cascade = subprocess.run([str(du_py), "-c", "import danbooru, os; print(os.path.dirname(danbooru.__file__))"],
                                    capture_output=True, text=True).stdout.strip()
        same = sha256_of(Path(du_cascade) / "lbpcascade_animeface.xml") == ANIMEFACE_SHA256
        print(f"danbooru-utility: {du_py} (its cascade {'is' if same else 'is NOT'} byte-identical to ours)")
    else:
        print(f"danbooru-utility: NOT MEASURED: {why}")

    runs = {
        "danbooru-utility": (lambda: run_danbooru_utility(du_py, files, workers)) if du_py else None,
        "limit": lambda: run_limit(files, cascade, workers),
        "detector-alone": lambda: run_detector(files, cascade, workers),
        "curate": lambda: run_curate(folder, cascade, workers),
        # danbooru-utility never enlarges a crop; curate under that same rule finds only faces that can
        # give a crop without upscaling, so its detector looks at 4x fewer pixels
        "curate-no-upscale": lambda: run_curate(folder, cascade, workers, max_upscale=1.0),
    }
    times: dict[str, list[float]] = {name: [] for name, f in runs.items() if f}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    last: dict[str, dict] = {}
    for r in range(args.rounds):
        line = []
        for name in times:
            c0 = _children_cpu()
            last[name] = runs[name]()
            cpu[name].append(_children_cpu() - c0)
            times[name].append(last[name]["seconds"])
            line.append(f"{name} {last[name]['seconds']:5.1f}s")
        print(f"  round {r + 1}: " + "  ".join(line), flush=True)

    n = len(files)
    rate = {name: n / statistics.median(t) for name, t in times.items()}
    cpu_rate = {name: n / statistics.median(t) for name, t in cpu.items()}
    print("\n  wall-clock images/s (median), and images per CPU-second of all its processes (steadier on a shared VM):")
    for name, res in last.items():
        found = ", ".join(f"{k} {v}" for k, v in res.items() if k != "seconds")
        print(f"  {name:18s} {rate[name]:6.2f} img/s  {cpu_rate[name]:6.2f} img/cpu-s   ({found}; "
              f"runs {', '.join(f'{t:.1f}' for t in times[name])} s)")
    for name in ("curate", "curate-no-upscale"):
        if "danbooru-utility" in rate:
            print(f"  {name} / danbooru-utility: {rate[name] / rate['danbooru-utility']:.2f}x wall, "
                  f"{cpu_rate[name] / cpu_rate['danbooru-utility']:.2f}x cpu   target >= 3x")
        else:
            print(f"  {name} / danbooru-utility: not measured ({why})")
    print(f"  curate / limit: {rate['curate'] / rate['limit']:.2f} wall, {cpu_rate['curate'] / cpu_rate['limit']:.2f} cpu"
          "   target >= 0.8")
    if "danbooru-utility" in rate:
        # The detection itself (same cascade, scale factor, neighbours and smallest useful face) is work
        # any implementation must do, so this ratio bounds what curate could reach with these settings.
        # (wall only: its CPU figure includes the decoding done before the clock starts)
        print(f"  ceiling: detector-alone / danbooru-utility = {rate['detector-alone'] / rate['danbooru-utility']:.2f}x "
              "wall (decoding for free)")


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _pixels(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return im.width * im.height


if __name__ == "__main__":
    main()
