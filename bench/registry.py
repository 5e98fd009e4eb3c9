"""Name -> object registries for methods, models and datasets.

Registries refuse duplicate names and answer an unknown name with the list of valid
ones (and the closest match), as torchvision's ``register_model`` and timm's
``list_models`` do. Lookups are lazy: the first lookup imports the modules that
register entries (``methods`` and any ``archbench.methods`` entry points), so
importing ``bench`` stays cheap and third-party methods plug in without edits here.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bench.errors import DuplicateName, UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to registered objects of one kind."""

    def __init__(self, kind: str, loaders: tuple[str, ...] = (), entry_point_group: str | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._loaders = loaders
        self._entry_point_group = entry_point_group
        self._loaded = False

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def add(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise DuplicateName(
                    f"a {self.kind} is already registered under the name '{name}' "
                    f"({self._items[name]!r}); pick another name"
                )
            self._items[name] = item
            return item

        return add(obj) if obj is not None else add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests that register throw-away entries)."""
        self._items.pop(name, None)

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._loaders:
            importlib.import_module(module)
        if self._entry_point_group:
            from importlib.metadata import entry_points

            for ep in entry_points(group=self._entry_point_group):
                ep.load()

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` or raise ``UnknownName`` listing valid names."""
        self._ensure_loaded()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownName(self._unknown_message(name)) from None

    def _unknown_message(self, name: str) -> str:
        valid = sorted(self._items)
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"unknown {self.kind} '{name}'.{hint} Valid {self.kind}s: {', '.join(valid) or '(none)'}"

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching an fnmatch ``pattern``."""
        self._ensure_loaded()
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._items)


METHODS: Registry = Registry("method", loaders=("methods",), entry_point_group="archbench.methods")
# Method packages may register the models they bring (NAS cells, model zoos), so they load too.
MODELS: Registry = Registry(
    "model", loaders=("bench.models.net", "bench.models.resnets", "methods"), entry_point_group="archbench.models"
)
DATASETS: Registry = Registry("dataset", loaders=("bench.data.registry",), entry_point_group="archbench.datasets")


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator: register a method class under ``name`` and set its ``name`` attribute."""

    def add(cls: T) -> T:
        cls.name = name  # type: ignore[attr-defined]
        METHODS.register(name, cls)
        return cls

    return add


def get_method(name: str):
    """The method class registered as ``name``."""
    return METHODS.get(name)


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching ``pattern``."""
    return METHODS.names(pattern)
