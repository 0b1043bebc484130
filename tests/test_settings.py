"""The one --set grammar (curate.core.settings): TOML values, JSON objects, plain strings, typed by msgspec."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from curate.core.errors import CurateError
from curate.core.settings import (SettingError, convert, default_of, parse_assignment, parse_assignments, parse_value,
                                  typed_changes)


def test_values_read_as_toml_then_json_then_plain_text():
    assert parse_value("10") == 10 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value('"a,b"') == "a,b" and parse_value("hat,bow") == "hat,bow"
    assert parse_value("[1, 2]") == [1, 2] and parse_value("{a = 1}") == {"a": 1}
    assert parse_value('{"256": 16}') == {"256": 16}  # JSON, as `curate train --set 'minibatch={"256": 16}'`
    assert parse_assignment("filter.min_favs = 20") == ("filter.min_favs", 20, "20")
    assert parse_assignments(["a=1", "b=x", "a=2"]) == {"a": 2, "b": "x"}
    with pytest.raises(SettingError, match="is not key=value"):
        parse_assignment("no-equals-sign")


@dataclass(frozen=True)
class _Config:
    steps: int = 3
    rate: float = 0.5
    on: bool = True
    name: str = "x"
    table: dict[int, int] = field(default_factory=lambda: {8: 4})


def test_changes_are_converted_to_the_field_types_with_one_line_errors():
    got = typed_changes(_Config, {"steps": "10", "rate": 2, "on": "false", "table": {"256": 16}})
    assert got == {"steps": 10, "rate": 2.0, "on": False, "table": {256: 16}}
    for changes, says in [({"steps": 1.5}, "steps expects int, not 1.5"), ({"rate": "fast"}, "rate expects float"),
                          ({"table": {"x": 1}}, "table expects dict[int, int]"), ({"nope": 1}, "unknown setting 'nope'"),
                          ({"rate": float("inf")}, "finite")]:
        with pytest.raises(SettingError, match=None) as e:
            typed_changes(_Config, changes)
        assert says in str(e.value) and "\n" not in str(e.value)
        assert isinstance(e.value, ValueError) and isinstance(e.value, CurateError)
    assert convert("k", "7", int) == 7


def test_defaults_come_from_the_config_class():
    assert default_of(_Config, "rate") == 0.5 and default_of(_Config, "table") == {8: 4}
    from curate.crop import CropConfig

    assert default_of(CropConfig, "scale_factor") == 1.1  # a class with required fields: no instance needed


def test_train_set_uses_the_one_grammar():
    from curate.train.stylegan.config import CONFIGS, parse_set, replace

    c = replace(CONFIGS["smoke"], **parse_set(["total_kimg=3", 'minibatch={"16": 8}', "mirror_augment=false"]))
    assert c.total_kimg == 3.0 and c.minibatch == {16: 8} and c.mirror_augment is False
    with pytest.raises(SettingError, match="snapshot_ticks expects int"):
        replace(CONFIGS["smoke"], **parse_set(["snapshot_ticks=1.5"]))


def test_pipeline_options_are_typed_before_anything_runs(tmp_path):
    from curate.pipeline.runner import PipelineError, load, plan

    path = tmp_path / "p.toml"
    path.write_text('input = "i"\nworkdir = "w"\n[filter]\nmin_favs = 3\n')
    steps = plan(load(path, ["filter.min_favs=20", "filter.keep_deleted=true"]))
    assert steps[0]["argv"][-3:] == ["--min-favs", "20", "--keep-deleted"]
    with pytest.raises(PipelineError, match="filter.min_favs expects int, not 'many'"):
        plan(load(path, ["filter.min_favs=many"]))
