"""The public API's docstrings: each has numpydoc sections and an Examples section whose examples run.

The public names are ``hermes_fast.__all__``, the functions of ``hf.validate`` and of ``hermes_fast.plot`` (their
``__all__``), the functions of ``hermes_fast.resolve`` and ``hermes_fast.variables.current_name`` /
``rename_to_current``. A name added to one of those lists without a runnable example fails here. Examples run
with :mod:`doctest` in a fresh namespace holding only ``hf`` (``import hermes_fast as hf``), with ELLIPSIS and
NORMALIZE_WHITESPACE; examples marked ``# doctest: +SKIP`` (an optional package) are not run. Examples in the
docstrings of other modules, functions and classes run too, in their module's namespace.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re

import matplotlib
import pytest

import hermes_fast as hf
from hermes_fast import plot, resolve, variables

matplotlib.use("Agg")  # the plot helpers' examples draw off-screen

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
_FINDER = doctest.DocTestFinder(recurse=False)


def _public() -> dict[str, object]:
    """Public name (as users write it) -> the object whose docstring documents it."""
    out: dict[str, object] = {}
    for name in hf.__all__:
        out[f"hf.{name}"] = getattr(hf, name)
    out["hf.VARIABLES"] = variables  # a dict: the registry module's docstring documents it
    for name in hf.validate.__all__:
        out[f"hf.validate.{name}"] = getattr(hf.validate, name)
    for name in plot.__all__:
        out[f"hermes_fast.plot.{name}"] = getattr(plot, name)
    for name in ("current_name", "rename_to_current"):
        out[f"hermes_fast.variables.{name}"] = getattr(variables, name)
    seen = {id(obj) for obj in out.values()}
    for name in resolve.__all__:
        obj = getattr(resolve, name)
        if inspect.isfunction(obj) and id(obj) not in seen:
            out[f"hermes_fast.resolve.{name}"] = obj
    return out


PUBLIC = _public()


def _qualified(obj) -> str:
    """The name doctest gives the docstring of ``obj`` when it walks ``obj``'s module."""
    if inspect.ismodule(obj):
        return obj.__name__
    return f"{obj.__module__}.{obj.__qualname__}"


def _doctest(name: str, obj, globs: dict) -> doctest.DocTest:
    tests = _FINDER.find(obj, name, module=inspect.getmodule(obj), globs=globs)
    assert len(tests) == 1, f"{name}: no docstring"
    return tests[0]


def _run(test: doctest.DocTest) -> None:
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    result = runner.run(test, out=report.append, clear_globs=True)
    if result.failed:
        pytest.fail(f"{result.failed} of {result.attempted} examples failed:\n" + "".join(report), pytrace=False)


def _sections(doc: str) -> set[str]:
    """numpydoc section titles: a line of text underlined by dashes of the same length."""
    lines = inspect.cleandoc(doc).splitlines()
    pairs = zip(lines, lines[1:], strict=False)
    return {a.strip() for a, b in pairs if b.strip() and set(b.strip()) == {"-"} and len(b.strip()) == len(a.strip())}


def _takes_parameters(obj) -> bool:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    return any(p.name not in ("self", "cls") for p in sig.parameters.values())


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_docstring_has_numpydoc_sections(name):
    obj = PUBLIC[name]
    doc = inspect.getdoc(obj) or ""
    summary = doc.strip().splitlines()[0] if doc.strip() else ""
    assert summary, f"{name}: no summary line"
    sections = _sections(doc)
    assert "Examples" in sections, f"{name}: no Examples section"
    if inspect.isfunction(obj) or inspect.isclass(obj):
        if _takes_parameters(obj):
            assert "Parameters" in sections, f"{name}: no Parameters section"
        if inspect.isfunction(obj):
            assert "Returns" in sections, f"{name}: no Returns section"
    test = _doctest(name, obj, {})
    assert test.examples, f"{name}: an Examples section without examples (>>>)"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_examples_run(name):
    _run(_doctest(name, PUBLIC[name], {"hf": hf}))


def _modules() -> list[str]:
    names = ["hermes_fast"]
    for info in pkgutil.walk_packages(hf.__path__, "hermes_fast."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


def _other_doctests() -> dict[str, doctest.DocTest]:
    """Every docstring example outside the public names' own docstrings, by doctest name."""
    covered = {_qualified(obj) for obj in PUBLIC.values()}
    finder = doctest.DocTestFinder(exclude_empty=True)
    out = {}
    for mod_name in _modules():
        mod = importlib.import_module(mod_name)
        for test in finder.find(mod, mod_name):
            if test.examples and test.name not in covered:
                out[test.name] = test
    return out


OTHER = _other_doctests()


def test_other_doctests_are_found():
    assert re.search(r"^hermes_fast\.config\.grid\.", "\n".join(OTHER), re.MULTILINE)


@pytest.mark.parametrize("name", sorted(OTHER))
def test_other_examples_run(name):
    test = OTHER[name]
    test.globs = {**test.globs, "hf": hf}
    _run(test)
