"""Shared test fixtures: the real Danbooru sample in ../shared (skipped cleanly when absent)."""

from __future__ import annotations

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
