from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from curate.crop import cascades
from curate.crop.cascades import (
    ANIMEFACE_FILE,
    ANIMEFACE_MEMBER,
    ANIMEFACE_SHA256,
    CascadeError,
    extract_animeface,
    fetch_animeface,
    load_cascade,
    resolve_cascade,
    sha256_of,
)

REAL = cascades.CASCADE_DIR / ANIMEFACE_FILE


@pytest.fixture
def real_cascade() -> Path:
    """The fetched anime-face cascade (`make test` fetches it first)."""
    if not REAL.is_file():
        pytest.skip(f"{REAL} is not fetched; run 'make cascades'")
    return REAL


def test_animeface_resolves_and_loads(real_cascade):
    path = resolve_cascade("animeface")
    assert path == real_cascade and sha256_of(path) == ANIMEFACE_SHA256
    assert not load_cascade(path).empty()


def test_missing_animeface_is_one_line_saying_make_cascades(tmp_path):
    with pytest.raises(CascadeError) as e:
        resolve_cascade("animeface", tmp_path)
    assert "make cascades" in str(e.value) and "\n" not in str(e.value)


def test_altered_animeface_is_refused(tmp_path, real_cascade):
    data = bytearray(real_cascade.read_bytes())
    data[2000] ^= 1  # one bit, same size
    (tmp_path / ANIMEFACE_FILE).write_bytes(bytes(data))
    with pytest.raises(CascadeError, match="make cascades"):
        resolve_cascade("animeface", tmp_path)
    (tmp_path / ANIMEFACE_FILE).write_bytes(real_cascade.read_bytes() + b"\n")
    with pytest.raises(CascadeError, match="not the expected"):
        resolve_cascade("animeface", tmp_path)


def test_frontalface_comes_with_opencv():
    path = resolve_cascade("frontalface")
    assert path.name == "haarcascade_frontalface_default.xml"
    assert not load_cascade(path).empty()


def test_a_path_is_used_as_is_and_checked_by_opencv(tmp_path):
    with pytest.raises(CascadeError, match="neither"):
        resolve_cascade(str(tmp_path / "none.xml"))
    (tmp_path / "bad.xml").write_text("<?xml version='1.0'?><opencv_storage></opencv_storage>\n")
    assert resolve_cascade(str(tmp_path / "bad.xml")) == tmp_path / "bad.xml"
    with pytest.raises(CascadeError, match="cannot load"):
        load_cascade(tmp_path / "bad.xml")


def test_extract_checks_the_wheel_member(tmp_path, real_cascade):
    good = tmp_path / "good.whl"
    with zipfile.ZipFile(good, "w") as z:
        z.write(real_cascade, ANIMEFACE_MEMBER)
    extract_animeface(good, tmp_path / "out" / ANIMEFACE_FILE)
    assert (tmp_path / "out" / ANIMEFACE_FILE).read_bytes() == real_cascade.read_bytes()

    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr(ANIMEFACE_MEMBER, "not it")
    with pytest.raises(CascadeError, match="sha256"):
        extract_animeface(bad, tmp_path / "other" / ANIMEFACE_FILE)
    assert not (tmp_path / "other" / ANIMEFACE_FILE).exists()

    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("x.txt", "")
    with pytest.raises(CascadeError, match="has no"):
        extract_animeface(empty, tmp_path / "other" / ANIMEFACE_FILE)


def test_fetch_is_instant_when_the_file_is_good(tmp_path, real_cascade, monkeypatch):
    shutil.copy(real_cascade, tmp_path / ANIMEFACE_FILE)

    def no_network(*a, **k):
        raise AssertionError("fetch must not download when the file is already good")

    monkeypatch.setattr(subprocess, "run", no_network)
    assert fetch_animeface(tmp_path) == (tmp_path / ANIMEFACE_FILE, False)


def test_check_command(real_cascade):
    done = subprocess.run([sys.executable, "-m", "curate.crop.cascades", "check"], capture_output=True, text=True,
                          cwd=Path(cascades.__file__).parents[2])
    assert done.returncode == 0 and "ok" in done.stdout
