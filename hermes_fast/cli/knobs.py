"""The knobs users reach for — ``--model --device --tp --replicas --rate --prompt-tokens --output-tokens
--policy`` — as dotted-path overrides of the scenario (:func:`hermes_fast.config.grid.apply_settings`), so their
values are validated by the ordinary config loading; an error names the flag and the path it set.

Which fields a flag sets:

- ``run`` / ``capacity``: ``--model``, ``--device``, ``--tp``, ``--replicas`` and ``--policy`` set the engines
  that serve the requests (``serving.engine``, or its first engine; the prefill and decode engines of
  disaggregated serving; the engines of a pipeline's ``prefill``, ``reason`` and ``decode`` stages and of its
  route's targets); ``--rate`` sets ``workload.rate_per_s``; ``--prompt-tokens`` and ``--output-tokens`` set the
  workload's fixed lengths and every request class's.
- ``estimate``: ``--model``, ``--device`` and ``--tp`` set every engine (as the ``--grid`` short keys do);
  ``--prompt-tokens`` and ``--output-tokens`` the static batch's requests. ``--rate``, ``--replicas`` and
  ``--policy`` are refused: a zero-load estimate does not depend on them.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..config.base import ConfigError
from ..config.files import load_yaml
from ..config.grid import parse_path, plain_value

__all__ = ["KNOBS", "add_knobs", "knob_settings", "apply_knobs", "flag_errors"]

# flag -> (argparse type, metavar, help)
KNOBS: dict[str, tuple[type, str, str]] = {
    "--model": (str, "NAME", "catalog model of the serving engine(s), e.g. llama-3.1-70b"),
    "--device": (str, "NAME", "catalog device of the serving engine(s), e.g. h200_sxm"),
    "--tp": (int, "N", "tensor-parallel degree of the serving engine(s)"),
    "--replicas": (int, "N", "replicas of the serving engine(s)"),
    "--rate": (float, "R", "mean arrival rate, requests/s (workload.rate_per_s)"),
    "--prompt-tokens": (int, "N", "fixed prompt length of every request, tokens"),
    "--output-tokens": (int, "N", "fixed output length of every request, tokens"),
    "--policy": (
        str,
        "NAME",
        "batching policy of the serving engine(s): static, continuous, continuous_chunked, chunked, mixed",
    ),
}
_ENGINE_FIELD = {
    "--model": "model",
    "--device": "device",
    "--tp": "parallel.tp",
    "--replicas": "replicas",
    "--policy": "batching.policy",
}
_ESTIMATE_REFUSED = ("--rate", "--replicas", "--policy")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_knobs(parser: argparse.ArgumentParser, command: str) -> None:
    group = parser.add_argument_group("scenario overrides (dotted-path settings, validated as in the file)")
    for flag, (kind, metavar, text) in KNOBS.items():
        if command == "capacity" and flag == "--rate":
            continue  # the search finds it
        if command == "estimate" and flag in _ESTIMATE_REFUSED:
            text = "not for estimate (a zero-load estimate does not depend on it)"
        elif command == "estimate" and flag in _ENGINE_FIELD:
            text = text.replace("the serving engine(s)", "every engine")
        group.add_argument(flag, type=kind, metavar=metavar, help=text, dest=_dest(flag))


def scenario_mapping(scenario: str | Path | None) -> dict:
    """The raw mapping of a scenario file (None: the embedded default)."""
    if scenario is None:
        scenario = Path(str(files("hermes_fast") / "scenarios" / "default.yaml"))
    raw = load_yaml(Path(scenario))
    if not isinstance(raw, dict):
        raise ConfigError("scenario", str(scenario), "a YAML mapping of scenario fields")
    return plain_value(raw)


def _serving_engines(sc) -> list[str]:
    """Names of the engines that prefill, reason or decode requests, in the scenario's order."""
    used: set[str] = set()
    if any(not c.pipeline for c in sc.workload.classes) or not sc.workload.classes:
        s = sc.serving
        used |= {s.prefill_engine, s.decode_engine} if s.disaggregated else {s.engine or sc.engines[0].name}
    for c in sc.workload.classes:
        routed = [t for st in c.pipeline if st.kind == "route" for t in st.targets]
        for st in c.pipeline:
            if st.kind in ("prefill", "reason", "decode"):
                used |= set(routed) if st.engine == "routed" else {st.engine}
    return [e.name for e in sc.engines if e.name in used]


def knob_settings(args: argparse.Namespace, base: dict, command: str) -> list[tuple[str, str, Any]]:
    """(flag, dotted path, value) for every knob given, against the raw scenario ``base``."""
    from ..resolve import load_scenario

    given = [(f, getattr(args, _dest(f), None)) for f in KNOBS]
    given = [(f, v) for f, v in given if v is not None]
    if not given:
        return []
    if command == "estimate":
        for flag, value in given:
            if flag in _ESTIMATE_REFUSED:
                raise ConfigError(
                    flag,
                    value,
                    f"no {flag} for estimate: a zero-load estimate of a static batch does not depend on the arrival "
                    "rate, replicas or batching policy (`hermes-fast run` simulates them)",
                )
    with flag_errors([], None, getattr(args, "scenario", None)):
        sc = load_scenario(base)  # the file itself is valid: later errors are the flags'
    if command == "estimate":
        engines = [e.name for e in sc.engines]
    else:
        engines = _serving_engines(sc)
    out: list[tuple[str, str, Any]] = []
    for flag, value in given:
        if flag in _ENGINE_FIELD:
            out += [(flag, f"engines[{name}].{_ENGINE_FIELD[flag]}", value) for name in engines]
        elif flag == "--rate":
            trace = sc.workload.arrival.trace
            if sc.workload.arrival.process == "trace" and (trace is None or not trace.rescale_to_rate):
                raise ConfigError(
                    flag,
                    value,
                    "a scenario whose arrival times follow workload.rate_per_s (this one replays a trace's own "
                    "times: set workload.arrival.trace.rescale_to_rate: true)",
                )
            out.append((flag, "workload.rate_per_s", value))
        else:
            field = "prompt_tokens" if flag == "--prompt-tokens" else "output_tokens"
            out.append((flag, f"workload.{field}", value))
            if command != "estimate":
                out += [(flag, f"workload.classes[{i}].{field}", value) for i in range(len(sc.workload.classes))]
    return out


def _index_path(path: str, base: dict) -> str:
    """``engines[NAME].x`` as config errors write it: ``engines[INDEX].x``."""
    segs = parse_path(path)
    if segs[0] == "engines" and isinstance(segs[1], str):
        names = [e.get("name") for e in base.get("engines", [])]
        if segs[1] in names:
            segs[1] = names.index(segs[1])
    text = ""
    for s in segs:
        text += f"[{s}]" if isinstance(s, int) else (f".{s}" if text else s)
    return text


def _is_sweep_file(path: str | Path | None) -> bool:
    try:
        raw = load_yaml(Path(path)) if path else None
    except ConfigError:
        return False
    return isinstance(raw, dict) and "grid" in raw and "engines" not in raw


@contextmanager
def flag_errors(settings: list[tuple[str, str, Any]], base: dict | None, scenario: str | None = None) -> Iterator[None]:
    """A ConfigError at a path a flag set names the flag: ``--tp (engines[0].parallel.tp): got 3; ...``; one
    from a sweep file given as the ``scenario`` says so."""
    paths = [(flag, _index_path(path, base)) for flag, path, _ in settings]
    try:
        yield
    except ConfigError as e:
        for flag, path in paths:
            if e.path == path or e.path.startswith((path + ".", path + "[")):
                raise ConfigError(f"{flag} ({e.path})", e.value, e.expected) from None
        if _is_sweep_file(scenario):
            raise ConfigError(
                "scenario", scenario, f"a scenario file; this is a sweep file (grid): `hermes-fast sweep {scenario}`"
            ) from None
        raise


def apply_knobs(scenario: str | None, args: argparse.Namespace, command: str):
    """(scenario for the command, settings, raw base): the file's Path (None: default) as it is when no knob is
    given, else the raw mapping with the knobs' settings applied."""
    from ..config.grid import apply_settings

    path = Path(scenario) if scenario else None
    if not any(getattr(args, _dest(f), None) is not None for f in KNOBS):
        return path, [], None
    with flag_errors([], None, scenario):
        base = scenario_mapping(path)
    settings = knob_settings(args, base, command)
    return apply_settings(base, [(p, v) for _, p, v in settings]), settings, base
