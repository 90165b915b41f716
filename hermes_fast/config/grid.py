"""Grid vocabulary shared by :func:`hermes_fast.sweep` and :func:`hermes_fast.estimate`: dotted paths of
scenario fields and the axes a grid is made of.

A path names a field as in the scenario file (``engines.decode.parallel.tp``, ``workload.rate_per_s``,
``workload.classes[0].pipeline[1].engine``, ``models[llama-3.1-8b].n_layers``). A grid maps a path to its
list of values (an axis named by the path), or an axis name to ``{path: values, ..., "label": [...]}`` (a
zipped axis: the paths change together).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np

from .base import ConfigError, close_match_hint
from .scenario import Scenario

__all__ = [
    "Axis",
    "parse_path",
    "path_kinds",
    "element_index",
    "apply_settings",
    "parse_axis",
    "axis_labels",
    "plain_value",
    "is_scalar",
]


# --- dotted paths ---------------------------------------------------------------------------------------


def parse_path(path: Any) -> list[str | int]:
    """Segments of a dotted path: ``engines.decode.parallel.tp`` or ``workload.classes[0].pipeline[1]``;
    ``[name]`` quotes a name containing dots (``models[llama-3.1-8b].n_layers``); digits index lists.

    Examples
    --------
    >>> parse_path("engines[llama-3.1-8b].parallel.tp")
    ['engines', 'llama-3.1-8b', 'parallel', 'tp']
    """
    if not isinstance(path, str) or not path.strip():
        raise ConfigError("grid", path, "a dotted path of a scenario field (e.g. workload.rate_per_s)")
    segs: list[str | int] = []
    i, n = 0, len(path)
    after_name = False
    while i < n:
        c = path[i]
        if c == "[":
            j = path.find("]", i)
            inner = path[i + 1 : j].strip().strip("'\"") if j > 0 else ""
            if not inner:
                raise ConfigError(f"grid.{path}", path, "a path whose [...] holds an index or a name")
            segs.append(int(inner) if inner.isdigit() else inner)
            i, after_name = j + 1, True
        elif c == ".":
            if not after_name or i == n - 1 or path[i + 1] in ".[]":
                raise ConfigError(f"grid.{path}", path, "a dotted path without empty segments")
            i, after_name = i + 1, False
        else:
            if after_name and segs:
                raise ConfigError(f"grid.{path}", path, "segments separated by '.'")
            j = i
            while j < n and path[j] not in ".[]":
                j += 1
            name = path[i:j].strip()
            segs.append(int(name) if name.isdigit() else name)
            i, after_name = j, True
    return segs


@cache
def _hints(cls) -> dict:
    return get_type_hints(cls)


def _unwrap(tp, more: bool):
    """The type to walk into: Optional[X] -> X; for X | Y prefer a dataclass when the path goes on."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if more:
            for a in args:
                if dataclasses.is_dataclass(a):
                    return a
        return args[0]
    return tp


def path_kinds(segs: list[str | int], path: str) -> list[str]:
    """For each segment of a parsed path: 'field' (a dataclass field), 'item' (a list element by index or
    name) or 'key' (a free mapping key, e.g. a catalog name); ConfigError for a path that leaves the schema."""
    tp: Any = Scenario
    kinds: list[str] = []
    for k, seg in enumerate(segs):
        here = ".".join(map(str, segs[:k])) or "<scenario>"
        tp = _unwrap(tp, more=True)
        if tp is Any:  # untyped (catalog overrides): the config loading validates what lies below
            kinds.extend("key" for _ in segs[k:])
            return kinds
        if dataclasses.is_dataclass(tp):
            valid = sorted(f.name for f in dataclasses.fields(tp))
            if seg not in valid:
                hint = close_match_hint(str(seg), valid)
                raise ConfigError(
                    f"grid.{path}", seg, f"a field of {tp.__name__} at {here}{hint}; valid: {', '.join(valid)}"
                )
            kinds.append("field")
            tp = _hints(tp)[seg]
        elif get_origin(tp) is tuple:
            kinds.append("item")
            tp = get_args(tp)[0]
        elif get_origin(tp) in (dict, Mapping):
            kinds.append("key")
            tp = get_args(tp)[1]
        else:
            raise ConfigError(f"grid.{path}", seg, f"nothing below {here}: it is a value, not a mapping or list")
    return kinds


def _label(elem: Any, field: Any) -> Any:
    if not isinstance(elem, Mapping):
        return None
    default = {"engines": "engine", "classes": "default"}.get(field)
    return elem.get("name", elem.get("kind", elem.get("tier", default)))


def element_index(seq: Any, seg: str | int, field: Any, path: str) -> int:
    """Index of the element of the raw list ``seq`` (of mappings) that ``seg`` names: an index, or the
    element's ``name`` (``kind`` for stages, ``tier`` for KV tiers); ``field`` names the list in errors."""
    if not isinstance(seq, list):
        raise ConfigError(f"grid.{path}", seg, f"an element of a list; the scenario has no list at {field}")
    if isinstance(seg, int):
        if not 0 <= seg < len(seq):
            raise ConfigError(f"grid.{path}", seg, f"an index in 0..{len(seq) - 1} of {field}")
        return seg
    names = [_label(e, field) for e in seq]
    hits = [i for i, name in enumerate(names) if name == seg]
    if len(hits) != 1:
        valid = ", ".join(str(x) for x in names)
        hint = close_match_hint(seg, [str(x) for x in names])
        why = "a unique name (use [index])" if hits else f"an element name{hint}"
        raise ConfigError(f"grid.{path}", seg, f"{why} of {field}: {valid}")
    return hits[0]


def _assign(root: dict, segs: list, kinds: list[str], value: Any, path: str) -> None:
    node: Any = root
    parent: Any = "<scenario>"
    for k, (seg, kind) in enumerate(zip(segs, kinds, strict=True)):
        last = k == len(segs) - 1
        if kind == "item":
            idx = element_index(node, seg, parent, path)
            if last:
                node[idx] = value
                return
            node, parent = node[idx], seg
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"grid.{path}", node, f"a mapping at {parent} to set {seg} in")
        if last:
            node[seg] = value
            return
        if node.get(seg) is None:
            if kinds[k + 1] == "item":
                raise ConfigError(f"grid.{path}", segs[k + 1], f"an existing element: the scenario has no {seg} list")
            node[seg] = {}
        elif kinds[k + 1] != "item" and not isinstance(node[seg], dict):
            raise ConfigError(f"grid.{path}", node[seg], f"a mapping at {seg} (the scenario gives a value there)")
        node, parent = node[seg], seg


def apply_settings(base: Mapping, settings: Sequence[tuple[str, Any]]) -> dict:
    """A copy of the raw scenario mapping ``base`` with each (dotted path, value) set."""
    out = copy.deepcopy(dict(base))
    for path, value in settings:
        segs = parse_path(path)
        _assign(out, segs, path_kinds(segs, path), copy.deepcopy(value), path)
    return out


# --- grid axes ------------------------------------------------------------------------------------------


def plain_value(v: Any) -> Any:
    """JSON- and YAML-like plain values (numpy scalars and arrays, tuples -> Python)."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return [plain_value(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [plain_value(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): plain_value(x) for k, x in v.items()}
    return v


def is_scalar(v: Any) -> bool:
    """A value that can be a coordinate as it is: a bool, int, str or a float other than NaN."""
    return isinstance(v, (bool, int, float, str)) and not (isinstance(v, float) and math.isnan(v))


@dataclasses.dataclass(frozen=True)
class Axis:
    """One dim of a grid: the paths it sets (several when zipped), their values and the coordinate labels."""

    name: str
    paths: tuple[str, ...]
    values: tuple[tuple, ...]  # values[j][p]: the value of paths[p] at position j
    labels: tuple

    @property
    def zipped(self) -> bool:
        return len(self.paths) > 1 or self.paths[0] != self.name


def _values(spec: Any, where: str) -> list:
    spec = plain_value(spec)
    if isinstance(spec, (str, bytes)) or not isinstance(spec, list):
        spec = [spec]
    if not spec:
        raise ConfigError(where, spec, "a non-empty list of values")
    return spec


def axis_labels(vals: list) -> list:
    """Coordinates of a one-path axis: its values when they are all numbers (ints and floats: floats), all
    strings or all booleans; else their JSON text."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
    if numbers and all(is_scalar(v) for v in vals):
        return [float(v) for v in vals] if any(isinstance(v, float) for v in vals) else vals
    if all(isinstance(v, str) for v in vals) or all(isinstance(v, bool) for v in vals):
        return vals
    return [v if isinstance(v, str) else json.dumps(v, sort_keys=True) for v in vals]


def parse_axis(key: Any, spec: Any) -> Axis:
    """One grid entry as an :class:`Axis`: ``key: values`` (one path, named by it) or ``key: {path: values,
    ..., "label": [...]}`` (zipped, equal lengths; labels default to the values joined by ``/``). Values are
    taken as given; whether the paths exist is for the caller to check.

    Examples
    --------
    >>> parse_axis("split", {"engines.a.replicas": [1, 2], "engines.b.replicas": [3, 2]}).labels
    ('1/3', '2/2')
    """
    key = str(key)
    if isinstance(spec, Mapping):
        cols = {str(p): _values(v, f"grid.{key}.{p}") for p, v in spec.items() if p != "label"}
        if not cols:
            raise ConfigError(f"grid.{key}", spec, "a mapping of at least one dotted path -> list of values")
        first, n = next(iter(cols)), len(next(iter(cols.values())))
        for p, vals in cols.items():
            if len(vals) != n:
                raise ConfigError(f"grid.{key}.{p}", vals, f"a list of {n} values, as long as {first}'s (zipped axes)")
        paths = tuple(cols)
        values = tuple(tuple(cols[p][j] for p in paths) for j in range(n))
        if "label" in spec:
            labels = _values(spec["label"], f"grid.{key}.label")
            if len(labels) != n or not all(is_scalar(x) for x in labels):
                raise ConfigError(f"grid.{key}.label", labels, f"a list of {n} names or numbers")
        else:
            labels = ["/".join(json.dumps(v) if not isinstance(v, str) else v for v in row) for row in values]
    else:
        vals = _values(spec, f"grid.{key}")
        paths, values = (key,), tuple((v,) for v in vals)
        labels = axis_labels(vals)
    if len(set(labels)) != len(labels):
        raise ConfigError(
            f"grid.{key}", labels, "distinct values (each becomes a coordinate; give zipped axes a label)"
        )
    return Axis(key, paths, values, tuple(labels))
