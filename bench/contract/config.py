"""Frozen dataclass configs built from user overrides, with strict key checking.

Every method has one frozen dataclass ``Config``. Overrides arrive from suites and the
command line as nested dicts (``{"train": {"lr": 0.1}}``) or dotted keys
(``{"train.lr": 0.1}``). ``make_config`` applies them through ``dataclasses.replace``
semantics; an unknown key raises ``InvalidConfig`` naming the valid keys, and a value
of the wrong type is rejected instead of silently becoming a string.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from bench.errors import InvalidConfig

C = TypeVar("C")


def _merge(into: dict[str, Any], key: str, value: Any) -> None:
    """Set ``into[key] = value``, deep-merging when both sides are mappings."""
    if isinstance(value, Mapping) and isinstance(into.get(key), dict):
        for sub_key, sub_value in value.items():
            _merge(into[key], sub_key, sub_value)
    elif isinstance(value, Mapping):
        into[key] = {}
        for sub_key, sub_value in value.items():
            _merge(into[key], sub_key, sub_value)
    else:
        into[key] = value


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Turn dotted keys into nested dicts, deep-merging with nested ones."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = str(key).partition(".")
        if isinstance(value, Mapping):
            value = _nest(value)
        _merge(out, head, {rest: value} if rest else value)
    return out


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _check_type(where: str, hint: Any, value: Any) -> Any:
    """Validate (and lightly coerce int -> float, list -> tuple) a value against a type hint."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(hint):
            try:
                return _check_type(where, arm, value)
            except InvalidConfig as err:
                errors.append(str(err))
        raise InvalidConfig(f"{where}: {value!r} matches none of {hint}")
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise InvalidConfig(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if hint is type(None):
        if value is not None:
            raise InvalidConfig(f"{where}: expected None, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InvalidConfig(f"{where}: expected a sequence, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_type(where, args[0], v) for v in value)
        return tuple(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidConfig(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidConfig(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise InvalidConfig(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise InvalidConfig(f"{where}: expected a string, got {value!r}")
        return value
    return value


def make_config(
    cls: type[C], overrides: Mapping[str, Any] | None = None, *, base: C | None = None, _where: str = ""
) -> C:
    """Build ``cls`` (a frozen dataclass) from ``base`` (default: its defaults) plus ``overrides``.

    A nested dataclass field is overridden on top of its own default value (so
    ``{"pretrain.train.epochs": 3}`` keeps the recipe's other training settings).
    Raises ``InvalidConfig`` for unknown keys (listing the valid ones), wrong types, or
    whatever the dataclass's own ``__post_init__`` validation rejects.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    nested = _nest(overrides or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(nested) - set(fields))
    if unknown:
        prefix = f"{_where}." if _where else ""
        raise InvalidConfig(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)} for {cls.__name__}; "
            f"valid keys: {', '.join(prefix + k for k in fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in nested.items():
        hint = hints[name]
        where = f"{_where}.{name}" if _where else name
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            current = getattr(base, name) if base is not None else _field_default(fields[name])
            kwargs[name] = make_config(hint, value, base=current, _where=where)
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, hint):
            kwargs[name] = value
        else:
            kwargs[name] = _check_type(f"{cls.__name__}.{where}", hint, value)
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)  # type: ignore[type-var]
    except (TypeError, ValueError) as err:
        if isinstance(err, InvalidConfig):
            raise
        raise InvalidConfig(f"{cls.__name__}: {err}") from err


def config_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON-serialisable dict of a (possibly nested) dataclass config."""
    return dataclasses.asdict(cfg)


def canonical_json(obj: Any) -> str:
    """Stable JSON text (sorted keys, no spaces) used for hashing and storage."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def require(condition: bool, message: str) -> None:
    """Raise ``InvalidConfig(message)`` unless ``condition``; for ``__post_init__`` checks."""
    if not condition:
        raise InvalidConfig(message)
