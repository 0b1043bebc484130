"""A run's saved named things (directions, edits): one JSON file under RUN/explore/, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from curate.core.atomic import write_json
from curate.explore.latent import ExploreError

T = TypeVar("T")
FOLDER = "explore"


class Store(Generic[T]):
    """Named items of one kind in RUN/explore/<file>, loaded and saved whole (a few dozen at most)."""

    def __init__(self, run_dir: str | os.PathLike, file: str, kind: str,
                 load: Callable[[dict[str, Any]], T], dump: Callable[[T], dict[str, Any]]):
        self.path = Path(run_dir) / FOLDER / file
        self.kind, self._load, self._dump = kind, load, dump

    def _parse(self, text: str, where: str) -> list[T]:
        try:
            data = json.loads(text)
        except ValueError:
            raise ExploreError(f"{where} is not JSON") from None
        items = data.get(self.kind) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ExploreError(f"{where} must be a list of {self.kind} (or an object with a {self.kind!r} list)")
        out = []
        for i, d in enumerate(items):
            if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"]:
                raise ExploreError(f"{where}: {self.kind} #{i + 1} has no name")
            out.append(self._load(d))
        return out

    def all(self) -> list[T]:
        """Every saved item, in the order saved."""
        if not self.path.exists():
            return []
        return self._parse(self.path.read_text(encoding="utf-8"), str(self.path))

    def get(self, name: str) -> T:
        for item in self.all():
            if item.name == name:
                return item
        raise ExploreError(f"no {self.kind[:-1]} named {name!r} is saved with this run")

    def _write(self, items: list[T]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {self.kind: [self._dump(x) for x in items]})

    def save(self, item: T) -> None:
        """Add an item, replacing one of the same name."""
        items = [x for x in self.all() if x.name != item.name]
        self._write(items + [item])

    def delete(self, name: str) -> bool:
        items = self.all()
        keep = [x for x in items if x.name != name]
        if len(keep) != len(items):
            self._write(keep)
        return len(keep) != len(items)

    def export_json(self) -> str:
        return json.dumps({self.kind: [self._dump(x) for x in self.all()]})

    def import_json(self, text: str, check: Callable[[T], None] | None = None) -> list[str]:
        """Save every item of an exported file (same names are replaced); their names."""
        new = self._parse(text, f"the imported {self.kind}")
        for item in new:
            if check:
                check(item)
        names = {x.name for x in new}
        self._write([x for x in self.all() if x.name not in names] + new)
        return [x.name for x in new]
