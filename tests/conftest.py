"""Shared test fixtures: the real Danbooru sample in ../shared (skipped cleanly when absent)."""

from __future__ import annotations

from pathlib import Path

import os

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
