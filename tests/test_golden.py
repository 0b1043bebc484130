"""The sample's crop files, crops table and records are pinned byte for byte (tests/golden/).

A refactor must leave what `curate crop` and `curate pack` write unchanged; a change meant to alter
those bytes rebuilds the file with `python tests/golden/sample_hashes.py --write` and says why.
"""

from __future__ import annotations

import json

from golden.sample_hashes import GOLDEN, sample_hashes


def test_sample_outputs_match_the_pinned_hashes(sample_root, tmp_path):
    expected = json.loads(GOLDEN.read_text())
    got = sample_hashes(sample_root, tmp_path)
    assert got["crop_files"] == expected["crop_files"]
    assert got["crops_table_content"] == expected["crops_table_content"]
    assert got["record_files"] == expected["record_files"]
    assert got["manifest_file_hashes"] == expected["manifest_file_hashes"]
