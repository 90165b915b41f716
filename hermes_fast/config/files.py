"""Files a scenario comes from: YAML read safely (bounded size, depth and alias expansion, duplicate keys refused,
``1e9`` read as a number, each error one :class:`~hermes_fast.config.base.ConfigError` naming the file and line)
and path names checked before anything is written or read."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .base import ConfigError

__all__ = ["load_yaml", "is_yaml_file", "check_path_length"]


MAX_YAML_DEPTH = 64  # nesting levels of mappings and lists
MAX_YAML_BYTES = 64 << 20  # characters of YAML text
MAX_YAML_NODES = 10_000_000  # values once aliases are expanded (a "billion laughs" stops here)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e12`` (no decimal point) as a float, as users expect, rejects duplicate keys,
    and limits nesting depth and (alias-expanded) size; ``label`` names the source in errors."""

    label = "<text>"
    _depth = 0

    def _where(self, mark) -> str:
        return f"{self.label}:{mark.line + 1}" if mark is not None else self.label

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(self._where(mark), f"depth {self._depth}", f"at most {MAX_YAML_DEPTH} nested levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node):
        sizes: dict[int, int] = {}
        open_: set[int] = set()

        def size(n) -> int:  # values once aliases are expanded (a node shared by aliases counts at each use)
            if id(n) in sizes:
                return sizes[id(n)]
            if id(n) in open_:
                raise ConfigError(self._where(n.start_mark), "a recursive alias", "aliases to finished values")
            open_.add(id(n))
            if isinstance(n, yaml.MappingNode):
                total = 1 + sum(size(k) + size(v) for k, v in n.value)
            elif isinstance(n, yaml.SequenceNode):
                total = 1 + sum(size(v) for v in n.value)
            else:
                total = 1
            open_.discard(id(n))
            sizes[id(n)] = total
            return total

        total = size(node)
        if total > MAX_YAML_NODES:
            raise ConfigError(self.label, f"{total} values", f"at most {MAX_YAML_NODES:g} values (aliases expanded)")
        return super().construct_document(node)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except ConfigError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:  # a scalar its tag cannot read:
            shown = node.value if isinstance(node, yaml.ScalarNode) else node.tag  # 2024-13-45, a 5000-digit int...
            if isinstance(shown, str) and len(shown) > 60:
                shown = f"{shown[:40]}... ({len(shown)} characters)"
            raise ConfigError(self._where(node.start_mark), shown, f"a value YAML can read ({type(e).__name__}: "
                              f"{str(e)[:80]})") from None  # fmt: skip

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # (`<<:` merges; explicit keys override them)
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: the constructor reports it
                    continue
                if seen is not key_node.start_mark:
                    raise ConfigError(
                        self._where(key_node.start_mark), key, f"a key used once in its mapping (also at line "
                        f"{seen.line + 1})",
                    )  # fmt: skip
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


MAX_NAME_BYTES = 255  # one file or directory name (NAME_MAX on Linux and macOS)
MAX_PATH_BYTES = 4095  # a whole path (PATH_MAX - 1)


def check_path_length(path: str | Path, what: str) -> None:
    """ConfigError naming ``what`` when ``path`` cannot name a file: a name over :data:`MAX_NAME_BYTES` or a path
    over :data:`MAX_PATH_BYTES` bytes (the file system would refuse it with a raw errno, late)."""
    text = str(path)
    raw = os.fsencode(text)
    if len(raw) > MAX_PATH_BYTES:
        raise ConfigError(what, text, f"a path of at most {MAX_PATH_BYTES} bytes (this one has {len(raw)})")
    for part in Path(text).parts:
        n = len(os.fsencode(part))
        if n > MAX_NAME_BYTES:
            raise ConfigError(what, text, f"file and directory names of at most {MAX_NAME_BYTES} bytes (one has {n})")


def is_yaml_file(source: str | Path) -> bool:
    """Whether :func:`load_yaml` reads ``source`` as a file (a Path, or a one-line string naming a file or
    ending in .yaml/.yml) rather than as YAML text."""
    if isinstance(source, Path):
        return True
    if "\n" in source:
        return False
    try:
        return source.endswith((".yaml", ".yml")) or Path(source).is_file()
    except OSError:  # e.g. a long one-line YAML text is not a valid file name
        return False


def load_yaml(source: str | Path, what: str | None = None) -> Any:
    """Parse a YAML file (a Path, or a string naming an existing file or ending in .yaml/.yml) or YAML text.

    Errors name the file (or ``<text>``) and line: invalid YAML, a key repeated in one mapping, more than
    ``MAX_YAML_DEPTH`` nested levels, more than ``MAX_YAML_BYTES`` characters or ``MAX_YAML_NODES`` values
    (aliases expanded), and an empty file. With ``what`` (e.g. ``"a scenario"``), a top level that is not a
    mapping is an error naming the source too.
    """
    is_file = is_yaml_file(source)
    if is_file:
        p = Path(source)
        check_path_length(p, "<file>")
        if not p.exists():
            raise ConfigError("<file>", str(source), "an existing YAML file")
        try:
            size = p.stat().st_size
            if size > MAX_YAML_BYTES:
                raise ConfigError(str(p), f"{size} bytes", f"a YAML file of at most {MAX_YAML_BYTES} bytes")
            text, label = p.read_text(encoding="utf-8"), str(p)
        except UnicodeDecodeError:
            raise ConfigError("<file>", str(source), "a UTF-8 text (YAML) file") from None
        except OSError as e:  # a directory, no permission, ...
            raise ConfigError("<file>", str(source), f"a readable YAML file ({e.strerror or e})") from None
    else:
        text, label = str(source), "<text>"
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(label, f"{len(text)} characters", f"YAML of at most {MAX_YAML_BYTES} characters")
    loader = None
    try:
        loader = _Loader(text)  # (a NUL or other unprintable character: a ReaderError here)
        loader.label = label
        data = loader.get_single_data()
    except yaml.reader.ReaderError as e:  # (no line: the reader refuses the text before parsing it)
        char = chr(e.character) if isinstance(e.character, int) else e.character
        raise ConfigError(label, f"character {char!r} at offset {e.position}", "printable YAML text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{label}:{mark.line + 1}" if mark else label
        raise ConfigError(where, getattr(e, "problem", None) or str(e), "valid YAML") from None
    except RecursionError:  # (nesting deeper than MAX_YAML_DEPTH is refused first; this is a safety net)
        raise ConfigError(label, "deeply nested YAML", f"at most {MAX_YAML_DEPTH} nested levels") from None
    finally:
        if loader is not None:
            loader.dispose()
    if is_file and data is None:
        raise ConfigError(label, None, f"{what or 'YAML content'}: the file is empty (or holds only comments)")
    if what is not None and not isinstance(data, Mapping):
        raise ConfigError(label, data, f"{what}: a YAML mapping (key: value lines) at the top level")
    return data
