"""Settings from the command line: the one `--set KEY=VALUE` grammar, typed through msgspec.

`curate run --set filter.min_favs=20` and `curate train --set 'minibatch={"256": 16}'` both read
their overrides here. A VALUE is read as a TOML value (10, 0.5, true, "quoted", [1, 2], {a = 1}),
else as a JSON value (objects keyed by strings, as the training tables are), else it is the plain
string. Each value is then converted to its setting's declared type with msgspec (laxly, so "10"
becomes 10 for an int), and a mismatch is one line naming the key, the type and the value.

The stage commands also take their option defaults from the stage's config dataclass through
`default_of`, so a default is written once, on the config field.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import tomllib
import typing
from typing import Any

import msgspec

from curate.core.errors import CurateError


class SettingError(CurateError, ValueError):
    """A `--set` item that is not KEY=VALUE, names no setting, or holds a value of the wrong type."""


def parse_value(text: str) -> Any:
    """A --set value as TOML would read it (10, 0.5, true, "x"), else as JSON ({"256": 16}), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignment(item: str) -> tuple[str, Any, str]:
    """`KEY=VALUE` (dotted keys allowed) -> (key, parsed value, raw text); SettingError when there is no `=`."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SettingError(f"{item!r} is not key=value")
    return key, parse_value(raw.strip()), raw.strip()


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Several `KEY=VALUE` items -> {key: value}; a later item for the same key wins."""
    return {key: value for key, value, _ in map(parse_assignment, items)}


def type_name(tp: Any) -> str:
    """How a setting's type reads in a message: int, float, bool, str, dict[int, int] ..."""
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp).replace("typing.", "")


def convert(key: str, value: Any, tp: Any) -> Any:
    """`value` as type `tp` (msgspec, lax: "10" -> 10, {"256": 8} -> {256: 8}); SettingError naming all three."""
    try:
        out = msgspec.convert(value, type=tp, strict=False)
    except msgspec.ValidationError as e:
        raise SettingError(f"{key} expects {type_name(tp)}, not {value!r} ({e})") from None
    if isinstance(out, float) and not math.isfinite(out):
        raise SettingError(f"{key} expects a finite number, not {value!r}")
    return out


def field_types(cls: type) -> dict[str, Any]:
    """{field name: resolved type} of a dataclass (string annotations evaluated)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def typed_changes(cls: type, changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` converted to the dataclass's field types; SettingError for an unknown key or a bad value."""
    types = field_types(cls)
    out = {}
    for key, value in changes.items():
        if key not in types:
            raise SettingError(f"unknown setting {key!r}; settings: {', '.join(sorted(types))}")
        out[key] = convert(key, value, types[key])
    return out


def default_of(owner: Any, name: str) -> Any:
    """The default of a dataclass field (its default_factory called) or of a function's parameter: the one
    place a command-line default is written is the config class (or the runner function) it feeds."""
    if dataclasses.is_dataclass(owner):
        field = {f.name: f for f in dataclasses.fields(owner)}[name]
        if field.default is not dataclasses.MISSING:
            return field.default
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
    else:
        default = inspect.signature(owner).parameters[name].default
        if default is not inspect.Parameter.empty:
            return default
    raise KeyError(f"{owner.__name__}.{name} has no default")
