"""Typed loading of frozen dataclasses from plain mappings, with dotted-path errors.

Every config dataclass declares its fields with :func:`fld`, which records the unit, a one-line
description and the numeric bounds. :func:`from_mapping` walks a dataclass's type hints and
converts/validates a YAML- or dict-shaped value, raising :class:`ConfigError` with the dotted path
of the offending field (``engines[1].parallel.tp``), the value, and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

__all__ = [
    "ConfigError",
    "fld",
    "from_mapping",
    "to_mapping",
    "field_docs",
    "close_match_hint",
    "convert_field",
    "deep_merge",
]


class ConfigError(ValueError):
    """Invalid configuration: ``path`` (dotted), the offending ``value`` and what is ``expected``.

    Invalid scenario fields, catalog names, grids, sweep files, calibrations, measurements and run arguments
    (``n_requests``, ...) raise one ConfigError, a :class:`ValueError` whose message reads
    ``path: got VALUE; expected WHAT``; the CLI prints it as one line and exits 2.

    Parameters
    ----------
    path : str
        Dotted path of the offending field (``engines[1].parallel.tp``); empty: ``<root>``.
    value : object
        The offending value (its repr is cut to 80 characters in the message).
    expected : str
        What is expected there (with the valid names or a close match, where there are some).

    Attributes
    ----------
    path, value, expected
        As given (``path`` ``<root>`` when empty).

    Examples
    --------
    >>> try:
    ...     hf.simulate(n_requests=0)
    ... except hf.ConfigError as e:
    ...     print(e.path, "|", e.value, "|", e.expected)
    n_requests | 0 | an integer >= 1
    >>> print(hf.ConfigError("engines[1].parallel.tp", 3, "a divisor of the 32 heads"))
    engines[1].parallel.tp: got 3; expected a divisor of the 32 heads
    """

    def __init__(self, path: str, value: Any, expected: str):
        self.path = path or "<root>"
        self.value = value
        self.expected = expected
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        where = self.path if len(self.path) <= 200 else f"{self.path[:120]}...{self.path[-60:]}"  # (a 5000-char key)
        if len(expected) > 1000:
            expected = expected[:997] + "..."
        super().__init__(f"{where}: got {shown}; expected {expected}")


def fld(
    default: Any = dataclasses.MISSING,
    *,
    unit: str = "",
    doc: str = "",
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    factory: Any = dataclasses.MISSING,
):
    """A dataclass field carrying its unit, description and numeric bounds."""
    meta = {"unit": unit, "doc": doc, "gt": gt, "ge": ge, "le": le, "lt": lt}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_docs(cls) -> list[tuple[str, str, str]]:
    """(name, unit, doc) for each field of a config dataclass, for documentation and `presets`."""
    return [(f.name, f.metadata.get("unit", ""), f.metadata.get("doc", "")) for f in dataclasses.fields(cls)]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def close_match_hint(key: str, valid: list[str], cutoff: float = 0.6) -> str:
    """' (did you mean 'x'?)' for the closest valid name, or '' when none is close."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(tp) -> str:
    origin = get_origin(tp)
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if origin in (dict, Mapping):
        return "a mapping"
    if origin is tuple:
        return "a list"
    return str(tp)


def _check_bounds(path: str, value: float, meta: Mapping) -> None:
    noun = "an integer" if isinstance(value, int) else "a number"
    for key, op, ok in (
        ("gt", ">", lambda v, b: v > b),
        ("ge", ">=", lambda v, b: v >= b),
        ("lt", "<", lambda v, b: v < b),
        ("le", "<=", lambda v, b: v <= b),
    ):
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            raise ConfigError(path, value, f"{noun} {op} {bound:g}")


_INT64_MAX = (1 << 63) - 1


def _is_mapping_type(tp) -> bool:
    return dataclasses.is_dataclass(tp) or get_origin(tp) in (dict, Mapping)


def _convert(value: Any, tp, path: str, meta: Mapping) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            if type(None) in get_args(tp):
                return None
            raise ConfigError(path, value, _type_name(args[0]))
        if len(args) == 1:
            return _convert(value, args[0], path, meta)
        errors = []
        for a in args:
            try:
                return _convert(value, a, path, meta)
            except ConfigError as e:
                if _is_mapping_type(a) and isinstance(value, Mapping):  # (a distribution...): its inner error
                    raise
                errors.append(e.expected)
        raise ConfigError(path, value, " or ".join(errors))
    if tp is Any:
        return value
    if value is None:
        raise ConfigError(path, value, _type_name(tp))
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            hint = close_match_hint(str(value), [str(c) for c in choices])
            raise ConfigError(path, value, "one of " + ", ".join(repr(c) for c in choices) + hint)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, value, "an integer")
        given = value
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise ConfigError(path, value, "an integer")
            value = int(value)
        try:
            _check_bounds(path, value, meta)
        except ConfigError as e:  # (as given: 1e+308, not its 309 digits)
            raise ConfigError(path, given, e.expected) from None
        if not -_INT64_MAX <= value <= _INT64_MAX:  # (fields without an upper bound: the loop's int64)
            raise ConfigError(path, given, f"an integer of magnitude <= {_INT64_MAX} (2^63 - 1)")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, value, "a number")
        try:
            value = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ConfigError(path, value, "a finite number (at most 1.8e308)") from None
        if not math.isfinite(value):
            raise ConfigError(path, value, "a finite number (use null where a field allows 'unlimited')")
        _check_bounds(path, value, meta)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, value, "a string")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_mapping(tp, value, path)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(path, value, "a mapping")
        ktp, vtp = get_args(tp)
        return {_convert(k, ktp, path, {}): _convert(v, vtp, _join(path, str(k)), meta) for k, v in value.items()}
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(path, value, "a list")
        (etp, _ellipsis) = get_args(tp)
        return tuple(_convert(v, etp, f"{path}[{i}]", meta) for i, v in enumerate(value))
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # programming error, not user error


_HINTS_CACHE: dict[type, dict] = {}


def _hints(cls) -> dict:
    if cls not in _HINTS_CACHE:
        _HINTS_CACHE[cls] = get_type_hints(cls)
    return _HINTS_CACHE[cls]


def from_mapping(cls, data: Any, path: str = ""):
    """Build the frozen dataclass ``cls`` from ``data``, validating every field.

    Unknown keys are rejected with the list of valid keys and a close-match hint; missing required
    keys, wrong types and out-of-range numbers raise :class:`ConfigError` naming the dotted path.
    After construction, a ``_validate(path)`` method on the class (if any) checks cross-field rules.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(path, data, f"a mapping ({cls.__name__})")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    valid = sorted(fields)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                _join(path, str(key)),
                value,
                f"a known key{close_match_hint(str(key), valid)}; valid keys: {', '.join(valid)}",
            )
        f = fields[key]
        kwargs[key] = _convert(value, hints[key], _join(path, key), f.metadata)
    for name, f in fields.items():
        if name in kwargs:
            continue
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(_join(path, name), None, f"a value ({_type_name(hints[name])}); this key is required")
    obj = cls(**kwargs)
    check = getattr(obj, "_validate", None)
    if check is not None:
        check(path)
    return obj


def convert_field(cls, name: str, value: Any, path: str) -> Any:
    """Validate ``value`` as field ``name`` of dataclass ``cls`` (type, bounds, choices), as from_mapping does."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return _convert(value, _hints(cls)[name], path, f.metadata)


def deep_merge(base: Mapping, over: Mapping) -> dict:
    """``base`` with ``over`` merged in field by field: nested mappings merge, any other value replaces.

    Examples
    --------
    >>> deep_merge({"a": 1, "e": {"x": 1, "y": 2}}, {"e": {"y": 3}})
    {'a': 1, 'e': {'x': 1, 'y': 3}}
    """
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def to_mapping(obj) -> Any:
    """Inverse of :func:`from_mapping`: plain dicts/lists suitable for YAML."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_mapping(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [to_mapping(v) for v in obj]
    return obj
