"""The command line as a user meets it: help, version, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from curate import __version__
from curate.filter.tagsets import DEFAULT_EXCLUDE


def curate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True)


def test_version_and_help():
    assert curate("--version").stdout.strip().endswith(__version__)
    top = curate("--help")
    assert top.returncode == 0 and "filter" in top.stdout and "Examples" in top.stdout
    sub = curate("filter", "--help")
    assert sub.returncode == 0 and "--min-favs" in sub.stdout and "Examples" in sub.stdout


def test_list_default_excludes_needs_nothing_else():
    r = curate("filter", "--list-default-excludes")
    assert r.returncode == 0 and r.stdout.split() == list(DEFAULT_EXCLUDE)


@pytest.mark.parametrize(
    "args, says",
    [
        (["filter", "/no/such/dir", "-o", "x.parquet"], "no such file or directory"),
        (["filter", "-o", "x.parquet"], "give at least one metadata file"),
        (["filter", "."], "--out"),
        (["filter", ".", "-o", "x.parquet", "--ratings", "z"], "is not a rating"),
        (["filter", ".", "-o", "x.parquet", "--since", "yesterday"], "is not a date"),
        (["filter", ".", "-o", "x.parquet", "--min-favs", "-1"], "--min-favs"),
        (["filter", ".", "-o", "x.parquet", "--since", "2018-01-01", "--until", "2017-01-01"], "earlier than"),
        (["nosuchstage"], "No such command"),
    ],
)
def test_misuse_is_one_line_and_exit_2(tmp_path, args, says):
    r = subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "--help" in lines[0], r.stderr


def test_fetch_without_network_fails_fast_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "curate", "fetch", str(tmp_path / "x"), "--base-url", "http://127.0.0.1:9",
                        "--no-progress"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "make dataset DANBOORU=" in r.stderr


def test_a_curate_error_from_a_stage_is_one_line(tmp_path, capsys):
    """Any CurateError subclass that escapes a command: `curate <cmd>: error: <message>`, no traceback."""
    from curate.cli import main
    from curate.core.errors import CurateError
    from curate.core.errors import InputError as CropInputError
    from curate.fetch.client import FetchError
    from curate.filter.metadata import InputError as FilterInputError
    from curate.review.session import ReviewInputError

    assert CropInputError is FilterInputError and issubclass(ReviewInputError, CurateError)
    with pytest.raises(SystemExit) as e:
        main(["crop", str(tmp_path / "missing"), "--out", str(tmp_path / "w")])  # InputError from the runner
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("curate crop: error: ") and "does not exist" in err and "(see 'curate crop --help')" in err
    with pytest.raises(SystemExit) as e:
        main(["review", "sheet", str(tmp_path), "--out", str(tmp_path / "s.png")])  # nested: its full path
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("curate review sheet: error: "), err
    assert FetchError.exit_code == 1  # not misuse: the network (see test_fetch_without_network_fails_fast...)


def test_option_defaults_are_the_config_defaults():
    """Each stage command reads its defaults from its config class: never typed twice."""
    from curate.crop.cli import crop_command
    from curate.dataset.pack import PackConfig
    from curate.dataset.pack_cli import pack_command
    from curate.filter.cli import filter_command
    from curate.filter.runner import FilterRules

    def defaults(command):
        return {p.name: p.default for p in command.params}

    crop = defaults(crop_command)
    assert crop["scale_factor"] == 1.1 and crop["k"] == 2.5 and crop["size"] == "512x256" and crop["fmt"] == "png"
    f, rules = defaults(filter_command), FilterRules()
    assert (f["min_favs"], f["min_height"], f["min_width"]) == (rules.min_favs, rules.min_height, rules.min_width)
    assert set(f["ratings"].split(",")) == rules.ratings and set(f["exts"].split(",")) == rules.exts
    pack, config = defaults(pack_command), PackConfig()
    assert (pack["name"], pack["seed"], pack["min_size"]) == (config.name, config.seed, config.min_size)
