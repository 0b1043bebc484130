"""Faults in `curate crop` (issue 13): odd folder entries, full and read-only disks, two runs into one
workdir, a killed run, outputs among the inputs, files that are no cascade, a single image as INPUT.

Each goes through the console entry point (curate.cli.main) as a user's command does; in a separate
process only where the test needs one (a run to stop, lock or kill), since each start costs a second.
The volume is the real sample copied four times (200 images: two chunks of the resume record), cropped
to 32x16 with a large --min-face so that a run takes about a second.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, assert_one_line_error, group_alive
from curate import cli
from curate.crop.cascades import ANIMEFACE_FILE, CASCADE_DIR
from curate.crop.runner import CHUNK, LOCK_FILE, PARTS_DIR, open_sources

SMALL = ["--size", "32x16", "--min-face", "96", "--no-progress"]  # ~1.5 KB crops: one tmpfs page each
COPIES = 4
PAGE = 4096


@pytest.fixture(scope="module")
def cascade() -> Path:
    path = CASCADE_DIR / ANIMEFACE_FILE
    if not path.is_file():
        pytest.skip(f"{path} is not fetched; run 'make cascades'")
    return path


@pytest.fixture(scope="module")
def volume(tmp_path_factory, cascade) -> Path:
    """The sample's 50 images, COPIES times, in a plain folder (hard links where the disk allows)."""
    from conftest import SAMPLE

    images = sorted((SAMPLE / "original").glob("*/*.jpg"))
    if len(images) != 50:
        pytest.skip(f"the shared Danbooru sample is not at {SAMPLE}")
    src = tmp_path_factory.mktemp("volume")
    for c in range(COPIES):
        (src / f"copy{c}").mkdir()
        for p in images:
            try:
                os.link(p, src / f"copy{c}" / p.name)
            except OSError:
                shutil.copy(p, src / f"copy{c}" / p.name)
    return src


@pytest.fixture(scope="module")
def clean(tmp_path_factory, volume) -> Path:
    """What an undisturbed run makes of the volume, on a big disk."""
    work = tmp_path_factory.mktemp("clean") / "w"
    with pytest.raises(SystemExit) as e:
        cli.main(["crop", str(volume), "--out", str(work), "-j", "2", *SMALL])
    assert e.value.code == 0
    return work


def crop(capsys, *args) -> subprocess.CompletedProcess:
    """`curate crop ARGS` through the console entry point, in this process; its exit code and output."""
    capsys.readouterr()
    try:
        cli.main(["crop", *map(str, args)])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["curate", "crop", *map(str, args)], code, out, err)


def outputs(work: Path) -> dict[str, bytes]:
    """crops.parquet and every crop file, by path: what a finished run must leave, nothing else."""
    got = {"crops.parquet": (work / "crops.parquet").read_bytes()}
    for f in sorted((work / "crops").rglob("*")):
        if f.is_file():
            got[f.relative_to(work).as_posix()] = f.read_bytes()
    return got


def assert_complete_and_clean(work: Path, clean: Path) -> dict:
    assert outputs(work) == outputs(clean)
    stray = [p for p in work.rglob("*") if ".tmp-" in p.name or p.name.startswith(LOCK_FILE)]
    assert stray == [], stray
    stats = json.loads((work / "crops.stats.json").read_text())
    assert stats["reasons"]["crop_error"] == 0 and stats["images"] == 50 * COPIES
    return stats


def wait_for(predicate, proc: subprocess.Popen) -> None:
    """Poll (not time) until `predicate()` holds; fail if the process ends first."""
    while not predicate():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before the test caught it"
        time.sleep(0.005)


def start_crop(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "curate", "crop", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


# ---- #7: what a folder holds besides images is counted, never opened ----------------------------------

def test_odd_folder_entries_are_counted_by_reason_and_never_opened(tmp_path, capsys, cascade, volume):
    src = tmp_path / "in"
    (src / "dir.jpg").mkdir(parents=True)
    (src / "sub").mkdir()
    good = volume / "copy0" / "2142266.jpg"  # a clear, centred face
    shutil.copy(good, src / "good.jpg")
    shutil.copy(good, src / "dir.jpg" / "inner.jpg")  # a folder named like an image is still searched
    (src / "gone.jpg").symlink_to("nowhere.jpg")
    (src / "loop.jpg").symlink_to("loop.jpg")
    os.mkfifo(src / "pipe.jpg")  # opening it would block the run forever
    os.mkfifo(src / "pipe")
    (src / "sub" / "up").symlink_to("..")  # a folder link: not followed (it loops)
    (src / "sub" / "alias.jpg").symlink_to("../good.jpg")  # a link to an image is an image
    (src / "sub" / "fifo-link.png").symlink_to("../pipe")
    (src / "gone-too").symlink_to("nothing")
    (src / "notes.txt").write_text("not an image\n")
    (src / ".thumbs.jpg").write_bytes(b"")

    signal.alarm(60)  # a FIFO opened by mistake would block forever: fail instead
    try:
        r = crop(capsys, src, "--out", tmp_path / "w", "-j", "1", "--no-progress")
    finally:
        signal.alarm(0)
    assert r.returncode == 0, r.stderr
    assert "8 images (5 unreadable" in r.stdout
    stats = json.loads((tmp_path / "w" / "crops.stats.json").read_text())
    assert stats["decode_failures"] == {"broken_link": 2, "not_a_file": 3}
    assert stats["reasons"]["broken_link"] == 2 and stats["reasons"]["not_a_file"] == 3
    assert stats["decoded"] == 3 and stats["crops"] == stats["images_with_crops"] == 3
    by_source = {f["source"]: (f["reason"], f["detail"]) for f in stats["failures"]}
    assert by_source == {
        "dir.jpg": ("not_a_file", "a folder"),
        "gone.jpg": ("broken_link", "a symlink to nowhere.jpg, which does not exist"),
        "loop.jpg": ("broken_link", "a symlink loop"),
        "pipe.jpg": ("not_a_file", "a FIFO"),
        "sub/fifo-link.png": ("not_a_file", "a FIFO (through a symlink)"),
    }
    assert stats["inputs"]["ignored_files"] == {"other_extension": 1, "hidden": 1, "folder_link": 1,
                                                "broken_link": 1, "not_a_file": 1}
    sources = {s["source"] for s in pq.read_table(tmp_path / "w" / "crops.parquet").to_pylist()}
    assert sources == {"good.jpg", "dir.jpg/inner.jpg", "sub/alias.jpg"}


# ---- #8, #9: a full disk stops the run; the same command resumes it ------------------------------------

def _pages(path: Path) -> int:
    return -(-path.stat().st_size // PAGE)


def test_a_full_disk_stops_the_run_and_a_resume_after_freeing_space_completes_it(tmp_path, capsys, tiny_disk, volume,
                                                                                   clean):
    disk, grow = tiny_disk
    # From the clean run: the tmpfs pages the first chunk needs (its crops and its two part files),
    # and the second chunk's crops. Leave room for the first chunk and half the second: the run must
    # finish chunk 0, then meet ENOSPC in chunk 1.
    sources, _ = open_sources(volume)
    first = {s.source for s in sources[:CHUNK]}
    rows = pq.read_table(clean / "crops.parquet").to_pylist()
    crop_pages = [(_pages(clean / r["file"]), r["source"] in first) for r in rows]
    chunk0 = sum(n for n, in_first in crop_pages if in_first)
    chunk1 = sum(n for n, in_first in crop_pages if not in_first)
    assert chunk0 > 4 and chunk1 > 4, (chunk0, chunk1)
    chunk0 += sum(_pages(p) for p in (clean / PARTS_DIR).glob("*/000000-*"))
    total = os.statvfs(disk).f_blocks * os.statvfs(disk).f_frsize // PAGE
    (disk / "filler").write_bytes(b"\0" * (total - chunk0 - chunk1 // 2) * PAGE)

    work = disk / "w"
    r = crop(capsys, volume, "--out", work, "-j", "2", *SMALL)
    line = assert_one_line_error(r, str(work), "No space left on device", "free some space", code=1)
    assert "crop_error" not in line
    done = list(work.glob(f"{PARTS_DIR}/*/*.json"))
    assert [p.name[:6] for p in done] == ["000000"], "the chunk finished before the disk filled up was not kept"
    assert not (work / "crops.parquet").exists()
    assert [p for p in work.rglob("*") if ".tmp-" in p.name] == [], "a failed write left a temporary"

    grow(8192)  # the user frees space
    r = crop(capsys, volume, "--out", work, "-j", "2", *SMALL)
    assert r.returncode == 0, r.stderr
    assert f"{len(sources) - CHUNK} images processed now" in r.stdout  # only what was not finished
    assert_complete_and_clean(work, clean)


def test_an_environment_error_inside_the_unit_is_raised_not_recorded_as_a_crop_error(tmp_path, cascade, volume, monkeypatch):
    import curate.crop.runner as runner
    from curate.crop.cropper import CropConfig
    from curate.crop.cascades import sha256_of

    def encode_out_of_memory(self, image):  # the machine, not the image: ENOMEM while encoding
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(runner.Cropper, "_encode", encode_out_of_memory)
    cfg = CropConfig(cascade=str(cascade), cascade_sha256=sha256_of(cascade), out_height=32, out_width=16, min_face=96)
    sources, _ = open_sources(volume / "copy0")
    with pytest.raises(OSError) as info:
        runner.run_crop(sources, tmp_path / "w", cfg, workers=1, progress=False, chunk=10)
    assert info.value.errno == errno.ENOMEM
    # the chunks before it are kept, none blames an image, and the chunk it happened in is not done
    done = [json.loads(p.read_text()) for p in (tmp_path / "w").glob(f"{PARTS_DIR}/*/*.json")]
    assert len(done) < len(sources) // 10
    assert all(c["reasons"].get("crop_error", 0) == 0 and c["crops"] == 0 for c in done)
    assert not (tmp_path / "w" / LOCK_FILE).exists()


def test_no_file_descriptors_left_is_raised_not_recorded_as_an_unreadable_image(tmp_path, volume):
    import resource

    from curate.crop.cropper import CropConfig, Cropper, Source
    from curate.crop.runner import _CropAndWrite

    worker = _CropAndWrite(Cropper(CropConfig(cascade="unused", cascade_sha256="")), tmp_path, None)
    image = volume / "copy0" / "2142266.jpg"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    try:  # a real EMFILE: every descriptor below a lowered limit taken
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(map(int, os.listdir("/proc/self/fd"))) + 8, hard))
        with pytest.raises(OSError) as full:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        assert full.value.errno == errno.EMFILE
        with pytest.raises(OSError) as info:
            worker(Source(str(image), image.name, "x"))
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert info.value.errno == errno.EMFILE and info.value.filename == str(image)


def test_a_read_only_workdir_is_one_line_naming_it(read_only_dir, tmp_path, capsys, cascade):
    (tmp_path / "in").mkdir()
    for out in (read_only_dir, read_only_dir / "w"):  # an existing workdir, and one to create
        r = crop(capsys, tmp_path / "in", "--out", out, "--no-progress")
        line = assert_one_line_error(r, str(out), "Read-only file system", code=1)
        assert LOCK_FILE not in line
    assert list(read_only_dir.iterdir()) == []


# ---- #11, #10: one run per workdir; a killed run leaves nothing running -------------------------------

def test_a_second_run_into_the_same_workdir_is_refused_while_the_first_lives(tmp_path, capsys, volume, clean):
    work = tmp_path / "w"
    first = start_crop(volume, "--out", work, "-j", "2", *SMALL)
    try:
        wait_for(lambda: (work / LOCK_FILE).is_file() and (work / LOCK_FILE).read_text().strip() == str(first.pid), first)
        os.kill(first.pid, signal.SIGSTOP)  # hold the first run still, lock taken, while the second tries
        try:
            second = crop(capsys, volume, "--out", work, "--k", "2", "--min-k", "1.5", *SMALL)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert_one_line_error(second, f"pid {first.pid}", str(work), "wait for it to finish", code=1)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode == 0, err
    assert_complete_and_clean(work, clean)
    assert len(list((work / PARTS_DIR).iterdir())) == 1  # the refused run's settings left no parts


def test_a_killed_run_leaves_no_process_and_the_rerun_completes(tmp_path, capsys, volume, clean):
    work = tmp_path / "w"
    proc = start_crop(volume, "--out", work, "-j", "2", *SMALL)
    try:
        wait_for(lambda: len(children(proc.pid)) >= 2, proc)  # the pool's workers are up
        os.kill(proc.pid, signal.SIGKILL)  # the main process only: its workers must follow by themselves
        proc.wait()
        deadline = time.monotonic() + 10
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not group_alive(proc.pid), "pool workers outlived the killed crop run"
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (work / "crops.parquet").exists(), "the run was not caught in the middle"
    r = crop(capsys, volume, "--out", work, "-j", "2", *SMALL)
    assert r.returncode == 0, r.stderr  # the dead run's lock is no obstacle
    assert_complete_and_clean(work, clean)


# ---- #4: outputs among the inputs ----------------------------------------------------------------------

def test_a_workdir_inside_the_input_folder_or_the_dataset_root_is_refused(tmp_path, capsys):
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.jpg").write_bytes(b"not really")
    table = tmp_path / "filtered.parquet"
    pq.write_table(pa.table({"id": pa.array([1], pa.int64()), "path": ["a/x.jpg"]}), table)
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    cases = [
        (["crop", str(src), "--out", str(src / "work")], "inside the input folder"),
        (["crop", str(src), "--out", str(tmp_path / "w"), "--overlays", str(src / "a" / "ov")], "--overlays"),
        (["crop", str(table), "--dataset-root", str(src), "--out", str(src / "w")], "inside the dataset root"),
    ]
    for argv, words in cases:
        with pytest.raises(SystemExit) as e:
            cli.main([*argv, "--cascade", "frontalface", "--no-progress"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and words in err and err.count("\n") == 1, err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


def test_a_filtered_table_inside_the_workdir_is_still_fine(tmp_path, capsys, volume, cascade):
    work = tmp_path / "w"
    work.mkdir()
    pq.write_table(pa.table({"id": pa.array([7], pa.int64()), "path": ["copy0/2142266.jpg"]}), work / "filtered.parquet")
    with pytest.raises(SystemExit) as e:
        cli.main(["crop", str(work / "filtered.parquet"), "--dataset-root", str(volume), "--out", str(work), "-j", "1",
                  "--no-progress"])
    assert e.value.code == 0, capsys.readouterr().err
    assert pq.read_table(work / "crops.parquet").column("crop_id").to_pylist() == ["7_0"]


# ---- #12 and the single image: INPUT and --cascade that are not what they seem -----------------------

@pytest.mark.parametrize("kind", ["passwd", "empty", "folder", "truncated", "fifo"])
def test_a_cascade_that_is_no_cascade_is_one_line_naming_it(tmp_path, capsys, cascade, kind):
    (tmp_path / "in").mkdir()
    bad = {"passwd": Path("/etc/passwd"), "folder": tmp_path / "in"}.get(kind, tmp_path / f"{kind}.xml")
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        bad.write_bytes(cascade.read_bytes()[:3000])
    elif kind == "fifo":
        os.mkfifo(bad)
    if not bad.exists():
        pytest.skip(f"{bad} does not exist here")
    with pytest.raises(SystemExit) as e:
        cli.main(["crop", str(tmp_path / "in"), "--out", str(tmp_path / "w"), "--cascade", str(bad), "--no-progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and str(bad) in err and "--cascade" in err, err
    assert not (tmp_path / "w").exists()


def test_a_single_image_is_cropped(tmp_path, capsys, volume, cascade):
    image = volume / "copy0" / "2142266.jpg"  # a clear, centred face
    with pytest.raises(SystemExit) as e:
        cli.main(["crop", str(image), "--out", str(tmp_path / "w"), "--no-progress"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("crop: 1 image (")
    rows = pq.read_table(tmp_path / "w" / "crops.parquet").to_pylist()
    assert [r["source"] for r in rows] == ["2142266.jpg"] and rows[0]["post_id"] is None
    # anything else that is not a table says what to give
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(SystemExit) as e:
        cli.main(["crop", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "w2"), "--no-progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--dataset-root" in err and ".jpg" in err and err.count("\n") == 1
