"""Shared test fixtures: the real Danbooru sample in ../shared (skipped cleanly when absent)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(ROOT.parent / "shared" / "data" / "danbooru-sample")


@pytest.fixture
def sample_root() -> Path:
    """The 50-image Danbooru sample; tests that need real images skip without it."""
    if not (SAMPLE / "metadata").is_dir():
        pytest.skip(f"the shared Danbooru sample is not at {SAMPLE} (a fresh clone has no ../shared)")
    return SAMPLE


CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"  # screenshots a person can look at (gitignored)
# Debian's Chromium as root on a machine with no network (FORMATS.md): never `playwright install`.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    """Headless Debian Chromium driven by Playwright. Skips without it, but fails under CI, whose
    job includes proving the pages work in a real browser (.ci/run installs it)."""
    if not CHROMIUM.exists():
        message = "no /usr/bin/chromium (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {message}")
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


# --- the fault kit: small disks, read-only folders, the CLI as a user runs it -------------------------

def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def tiny_disk(tmp_path):
    """A folder on its own small tmpfs (256 KiB), to fill up: needs root and mount(8), skips elsewhere.

    Yields (path, grow): `grow(kib)` remounts it bigger, as when a user frees space, without touching
    what it holds."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a full-disk test mounts a small tmpfs: needs root and mount(8)")
    where = tmp_path / "tiny"
    where.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)):
        pytest.skip("mount -t tmpfs was refused here (no CAP_SYS_ADMIN)")

    def grow(kib: int) -> None:
        assert _mount("-o", f"remount,size={kib}k", str(where))

    try:
        yield where, grow
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder that even root cannot write (a read-only bind mount): needs root and mount(8)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a read-only test bind-mounts a folder read-only: needs root and mount(8)")
    where = tmp_path / "ro"
    where.mkdir()
    if not (_mount("--bind", str(where), str(where)) and _mount("-o", "remount,bind,ro", str(where))):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        pytest.skip("a read-only bind mount was refused here (no CAP_SYS_ADMIN)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def run_curate(*args, cwd=None, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m curate ARGS` in a fresh process, as a user runs it; text output captured."""
    return subprocess.run([sys.executable, "-m", "curate", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, **(env or {})})


def start_curate_server(*args) -> tuple[subprocess.Popen, str]:
    """A real `python -m curate ARGS` web server (review grid, explore) on the port it prints; it and its URL."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "curate", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if "http://" in line:
            return proc, line.split("open ")[1].split()[0]
    proc.kill()
    raise AssertionError(f"the server did not start: {proc.stderr.read()[-3000:]}")


def assert_one_line_error(r: subprocess.CompletedProcess, *words: str, code: int | None = None) -> str:
    """The command failed with one line on stderr (no traceback) that contains each of `words`."""
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-3000:]
    assert r.returncode != 0, (r.stdout, r.stderr)
    if code is not None:
        assert r.returncode == code, (r.returncode, err)
    last = err.splitlines()[-1] if err else ""
    assert "error:" in last, err
    for w in words:
        assert w in last, (w, last)
    return last


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group `pgid` is still running (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_when(proc: subprocess.Popen, ready, timeout: float = 60) -> None:
    """Freeze `proc`'s whole process group (SIGSTOP) as soon as `ready()` is true: a run held mid-way.

    The caller sizes the work so that the run lasts far longer than one poll (2 ms); if it ends
    first anyway, this fails saying so rather than testing nothing."""
    import time

    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            os.killpg(proc.pid, signal.SIGSTOP)
            assert proc.poll() is None, "the run ended before it could be held: give it more work"
            return
        time.sleep(0.002)
    out, err = proc.communicate() if proc.poll() is not None else (b"", b"")
    raise AssertionError(f"the run never reached the point to hold it at (rc {proc.poll()}): {err[-2000:]!r}")


@pytest.fixture(scope="session")
def s3():
    """A local S3 server (curate.testing.objectstore); CI installs moto with the dev extras."""
    if not os.environ.get("CI"):
        pytest.importorskip("moto", reason="moto is not installed (make dev installs it)")
        pytest.importorskip("apache_beam.io.aws.s3filesystem", reason="apache-beam[aws] is not installed")
    from curate.testing.objectstore import S3Server

    server = S3Server()
    yield server
    server.stop()
