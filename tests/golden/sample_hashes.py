"""The sample's output hashes: what `curate crop` and `curate pack` write for the 50-post sample.

Runs filter -> crop -> score (heuristic) -> pack through the `curate` command, the way a user does,
and hashes every crop file, the crops table's content, every record file and the file hashes dataset.json
lists. tests/test_golden.py compares a fresh run with `sample-hashes.json`; when a change is meant to
alter the bytes, rebuild it and say so in the commit:

    python tests/golden/sample_hashes.py --write      (needs ../shared/data/danbooru-sample)
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT.parent / "shared" / "data" / "danbooru-sample"
GOLDEN = Path(__file__).with_name("sample-hashes.json")


def _curate(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "curate", *args], check=True, capture_output=True, cwd=ROOT)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def table_content_sha256(path: Path) -> str:
    """sha256 of a parquet table's columns and rows, not of the file: the file's bytes also name the
    pyarrow version that wrote it (its `created_by`), which is not ours to pin."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    content = {"columns": [[f.name, str(f.type)] for f in table.schema], "rows": table.to_pylist()}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def sample_hashes(sample: Path, work: Path) -> dict:
    """Run the four stages on SAMPLE into WORK and return every pinned hash."""
    filtered = work / "filtered.parquet"
    _curate("filter", str(sample / "metadata"), "--dataset-root", str(sample), "--ratings", "g,s,q",
            "--out", str(filtered), "--workers", "2", "--no-progress")
    _curate("crop", str(filtered), "--dataset-root", str(sample), "--out", str(work), "--workers", "2",
            "--no-progress")
    _curate("score", str(work), "--scorer", "heuristic", "--no-progress")
    _curate("pack", str(work), "--out", str(work / "dataset"), "--name", "sample", "--workers", "2",
            "--no-progress")
    manifest = json.loads((work / "dataset" / "dataset.json").read_text())
    return {
        "crops_table_content": table_content_sha256(work / "crops.parquet"),
        "crop_files": {p.relative_to(work).as_posix(): _sha256(p) for p in sorted((work / "crops").rglob("*.png"))},
        "record_files": {p.name: _sha256(p) for p in sorted((work / "dataset").glob("*.tfrecords"))},
        "manifest_file_hashes": {name: entry["sha256"] for name, entry in manifest["files"].items()},
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hashes = sample_hashes(SAMPLE, Path(tmp))
    text = json.dumps(hashes, indent=1, sort_keys=True) + "\n"
    if "--write" in sys.argv:
        GOLDEN.write_text(text)
        print(f"wrote {GOLDEN.relative_to(ROOT)}: {len(hashes['crop_files'])} crops, "
              f"{len(hashes['record_files'])} record files")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
