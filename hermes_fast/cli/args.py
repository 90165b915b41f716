"""Option values several commands read: ``--grid KEY=V1,V2,...`` into a grid mapping, ``--calibration``."""

from __future__ import annotations

from collections.abc import Sequence

from ..config.base import ConfigError

__all__ = ["calibration_arg", "parse_grid"]


def _grid_value(text: str):
    """A --grid value: an integer, a number, true or false, or else a name (no YAML: '1:2' must not become 62)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(
                f"--grid {item}", item, "KEY=V1,V2,... (e.g. batch_size=1,8,64 or engines.main.parallel.tp=1,2)"
            )
        if key.strip() in grid:
            raise ConfigError(f"--grid {item}", item, f"each grid key once (combine values: {key.strip()}=A,B,...)")
        grid[key.strip()] = [_grid_value(v.strip()) for v in values.split(",") if v.strip()]
    return grid


def calibration_arg(args):
    """--calibration values: 'default', 'none', shipped names or files (repeatable)."""
    values = getattr(args, "calibration", None)
    return values if values else "default"
