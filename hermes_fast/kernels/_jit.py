"""The one place that holds numba options, and the plain-Python / compiled twin mechanism.

Every kernel is written as a plain Python function and decorated with :func:`kernel`, which leaves it
plain (the slow reference, used by tests) and attaches its compiled twin as ``fn.jit``. The twin is
compiled from a copy of the function whose global names for other kernels point at *their* twins, so
compiled kernels call compiled kernels and plain ones call plain ones, from one source. A kernel calls
another by its own name (``from .kv import release_kv``), never through a module attribute or an alias.

:func:`specialized` compiles a kernel again with some module constants replaced (``PIPELINES=False``):
numba prunes the branches those constants decide before typing, so code only they reach is never
compiled; the kernels it calls are specialized too where they read a replaced constant, directly or
through their own callees, and shared otherwise.

Options come from environment variables read once at import:

- ``HERMES_CACHE`` (default 1): cache compiled machine code on disk. numba keys a cache entry on the
  defining file only, not on the kernels it calls from other files, so every twin's name carries a hash
  of the kernel package's sources (subpackages included): an edit to any kernel file (a ``git pull``
  included) recompiles them all.
- ``HERMES_CACHE_DIR`` (default ``$XDG_CACHE_HOME/hermes_fast``, else ``~/.cache/hermes_fast``): where. The
  cache is keyed on the kernels' contents, not on where they are installed, so a source checkout, the copy
  ``pip install .`` puts in site-packages and other virtual environments share it: the tests reuse what
  ``hermes-fast run`` compiled. Where it cannot be written, numba's own place beside the sources is used.
- ``HERMES_FASTMATH`` (default 0): allow reassociation; off by default because results must be
  bit-identical across runs and chunkings.
- ``HERMES_PARALLEL`` (default 0): compile grid loops with ``parallel=True`` (prange over points).

Kernels are compiled without numba's runtime reference counting (``_nrt=False``): they only index
arrays their caller owns, and every kernel call that takes the serving loop's state would otherwise
pay an atomic increment and decrement per array it touches (over a third of the loop's time). The
price: a kernel may not allocate an array (``np.empty`` and friends fail to compile); allocate in Python.

:func:`prefetch` asks the CPU for an array row's cache line ahead of its use (a no-op in plain Python): for the
prefix cache's walks over cold table entries, whose loads would otherwise wait one after another.

Compile time is what a first run waits for, so two numba defaults are changed. Calls between kernels
compile one version per argument *type*, not one per literal value (:func:`_typed_by_value`). And numba-IR
inlining (``inline=True``, which types a callee again in every caller) is kept for the serving loop's kernels
that take its state, whose calls cost the state's ~17 arrays as ~150 scalar arguments: those with one caller,
and the small hot ones (heaps, queues, transfers). The step cost's helpers are left to LLVM, which inlines
small callees anyway: IR-inlining them cost 22 s of the loop's 53 s for the same grid and step-cost speed.
"""

from __future__ import annotations

import dis
import functools
import hashlib
import os
import sys
import threading
import time
import types
from pathlib import Path

import numba
from llvmlite import ir
from numba.core import caching, cgutils
from numba.core import types as nbtypes
from numba.core.registry import cpu_target
from numba.core.types import unliteral
from numba.extending import intrinsic, overload

__all__ = ["kernel", "grid_kernel", "specialized", "prefetch", "compile_with_notice", "OPTIONS", "PARALLEL"]


def _flag(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() not in ("0", "false", "no", "off", "")


CACHE = _flag("HERMES_CACHE", "1")
FASTMATH = _flag("HERMES_FASTMATH", "0")
PARALLEL = _flag("HERMES_PARALLEL", "0")
OPTIONS = {"cache": CACHE, "fastmath": FASTMATH, "nogil": True, "error_model": "numpy", "_nrt": False}

# inlined callees and the engine-parameter layout live in other files than the kernels that use them: hash every
# file of the kernel package, subpackages included (paths too, so a moved file counts as a change), but the
# serving package's plain-Python modules, which no kernel reads
_ROOT = Path(__file__).parent
_PYTHON_ONLY = {"serving/allocation.py", "serving/driver.py", "serving/outcome.py"}
_SOURCES = hashlib.sha256(
    b"".join(
        str(f.relative_to(_ROOT)).encode() + f.read_bytes()
        for f in sorted(_ROOT.rglob("*.py"))
        if f.relative_to(_ROOT).as_posix() not in _PYTHON_ONLY
    )
)
SOURCE_TAG = "__k" + _SOURCES.hexdigest()[:12]


def _cache_dir() -> Path | None:
    """Where the shared cache lives (None: no home directory to put it in; numba's own places then)."""
    if os.environ.get("HERMES_CACHE_DIR"):
        return Path(os.environ["HERMES_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "hermes_fast"
    try:
        return Path.home() / ".cache" / "hermes_fast"
    except RuntimeError:  # (an arbitrary user id in a container: no home)
        return None


CACHE_DIR = _cache_dir()


class _SharedCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Caches the kernels of this package under CACHE_DIR by their path inside the package (not the absolute
    path numba uses), so every installed copy of the same sources shares one cache; numba's own check of the
    source file's contents (its stamp) still guards each entry."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        inner = Path(py_file).resolve().parent.relative_to(_ROOT.resolve())
        self._cache_path = str(CACHE_DIR / f"numba-{numba.__version__}" / "kernels" / inner)

    def get_cache_path(self):
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file):
        try:
            Path(py_file).resolve().relative_to(_ROOT.resolve())
        except ValueError:  # not one of this package's kernels
            return None
        return super().from_function(py_func, py_file)  # (None when the directory cannot be written)


if CACHE and CACHE_DIR is not None and _SharedCacheLocator not in caching.CacheImpl._locator_classes:
    caching.CacheImpl._locator_classes.insert(0, _SharedCacheLocator)

# Load numba's typing and lowering registries now, typing first, as an uncached compile does. A cached dispatcher's
# first compile loads the lowering side first (its cache lookup refreshes it), which puts the @overload templates of
# ``getitem``/``setitem`` (strings, typed dicts and lists, literal tuples) ahead of the array ones: every array
# index in a kernel then tries seven templates that fail first (4 s of the serving loop's 29 s cold compile).
cpu_target.typing_context.refresh()
cpu_target.target_context.refresh()

_kernels: dict[str, types.FunctionType] = {}  # name -> the plain kernel
_how: dict[str, tuple[bool, str]] = {}  # name -> (parallel, inline) it was registered with
_twins: dict[str, object] = {}  # name -> compiled twin
_namespaces: list[dict] = []  # the twins' globals, each updated as later kernels register
_special: dict[tuple, dict[str, object]] = {}  # replaced constants -> name -> specialized twin


def _compile_twin(fn, ns: dict, parallel: bool, inline: str, tag: str = ""):
    """njit a copy of ``fn`` that reads its globals from ``ns``."""
    clone = types.FunctionType(fn.__code__, ns, fn.__name__, fn.__defaults__, fn.__closure__)
    # numba's cache key ignores parallel/fastmath, replaced constants and the other kernel files: name the
    # variant and the sources, so one never loads code compiled for another
    variant = ("__parallel" if parallel else "") + ("__fastmath" if FASTMATH else "") + tag
    clone.__qualname__ = fn.__qualname__ + variant + SOURCE_TAG
    clone.__module__ = fn.__module__
    twin = numba.njit(parallel=parallel, inline=inline, **OPTIONS)(clone)
    _typed_by_value(twin)
    return twin


def _typed_by_value(twin) -> None:
    """Calls from other kernels compile one version of ``twin`` per argument *type*: numba would otherwise
    compile one per literal value (``f(S, 0)`` and ``f(S, pool)`` twice, and again every callee the literal
    reaches), which doubled the serving loop's compile time. No kernel asks for literal arguments."""
    get_call_template = twin.get_call_template

    def by_type(args, kws):
        return get_call_template(tuple(unliteral(a) for a in args), {k: unliteral(v) for k, v in kws.items()})

    twin.get_call_template = by_type


def _register(fn, parallel: bool, inline: str):
    if fn.__name__ in _kernels:
        raise RuntimeError(f"kernel name {fn.__name__!r} is defined twice; kernel names must be unique")
    ns = dict(fn.__globals__)
    ns.update(_twins)
    if parallel:
        ns["prange"] = numba.prange
    _namespaces.append(ns)
    twin = _compile_twin(fn, ns, parallel, inline)
    _kernels[fn.__name__] = fn
    _how[fn.__name__] = (parallel, inline)
    _twins[fn.__name__] = twin
    for other in _namespaces:  # kernels defined earlier see this twin too (resolved at first compile)
        other[fn.__name__] = twin
    fn.jit = twin
    return fn


def kernel(fn=None, *, inline: bool = False):
    """Register ``fn`` (plain Python, numba-compatible) and attach its compiled twin as ``fn.jit``.

    ``inline=True`` inlines the twin into its callers at numba-IR level: for kernels that take the serving
    loop's state (a call passes its ~17 arrays as ~150 scalar arguments) and have one caller, or are tiny
    and hot (the event heaps, the queues). Every inlined copy is typed and compiled again in its caller.
    """

    def register(f):
        return _register(f, parallel=False, inline="always" if inline else "never")

    return register if fn is None else register(fn)


def grid_kernel(fn):
    """Like :func:`kernel` for loops over grid points; compiled with ``parallel`` if HERMES_PARALLEL=1."""
    return _register(fn, parallel=PARALLEL, inline="never")


def prefetch(a, i) -> None:
    """Hint: row ``i`` of array ``a`` (its first element) will be read soon. Plain Python ignores it; compiled, it
    is LLVM's ``prefetch`` (read, keep in all cache levels), which never faults, whatever ``i``."""


@intrinsic
def _prefetch(typingctx, a, i):
    def codegen(context, builder, sig, args):
        aty = sig.args[0]
        ary = context.make_array(aty)(context, builder, args[0])
        index = [args[1]] + [context.get_constant(nbtypes.intp, 0)] * (aty.ndim - 1)
        ptr = cgutils.get_item_pointer(context, builder, aty, ary, index, wraparound=False)
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]), "llvm.prefetch.p0"
        )
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return nbtypes.void(a, nbtypes.intp), codegen


@overload(prefetch)
def _prefetch_compiled(a, i):
    return lambda a, i: _prefetch(a, i)


@functools.cache  # (disassembling is slow: the loop's specialisations ask about each kernel many times)
def _global_names(code: types.CodeType) -> frozenset[str]:
    """The global names ``code`` (and the functions nested in it) loads: not attribute names."""
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname == "LOAD_GLOBAL"}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return frozenset(names)


def _reads(name: str, constants: frozenset, seen: dict[str, bool]) -> bool:
    """Whether kernel ``name`` reads one of ``constants``, itself or through the kernels it calls."""
    if name not in seen:
        seen[name] = False  # (kernels do not call each other in a cycle)
        refs = _global_names(_kernels[name].__code__)
        seen[name] = bool(refs & constants) or any(_reads(r, constants, seen) for r in refs if r in _kernels)
    return seen[name]


def specialized(fn, **constants):
    """The compiled twin of kernel ``fn`` with module-level ``constants`` replaced (e.g. ``PIPELINES=False``).

    Branches the constants decide are pruned before typing; kernels ``fn`` calls are specialized the same way
    where they read a replaced constant (directly or through their callees) and shared with ``fn.jit``'s
    otherwise. The twin is compiled (or loaded from the cache) at its first call, like ``fn.jit``.
    """
    for const in constants:  # a constant the module imported under another name would not be replaced
        if not any(const in _global_names(k.__code__) for k in _kernels.values()):
            raise ValueError(f"specialized: no kernel reads a global named {const!r}")
    key = tuple(sorted(constants.items()))
    return _specialize(fn.__name__, key, {})


def _specialize(name: str, key: tuple, seen: dict[str, bool]):
    done = _special.setdefault(key, {})
    if name in done:
        return done[name]
    constants = dict(key)
    if not _reads(name, frozenset(constants), seen):
        return _twins[name]
    fn = _kernels[name]
    parallel, inline = _how[name]
    ns = dict(fn.__globals__)
    ns.update(_twins)
    if parallel:
        ns["prange"] = numba.prange
    for ref in _global_names(fn.__code__):
        if ref in _kernels:
            ns[ref] = _specialize(ref, key, seen)
    ns.update(constants)
    _namespaces.append(ns)  # (a kernel registered later is seen here too)
    tag = "".join(f"__{k}{int(v) if isinstance(v, bool) else v}" for k, v in key)
    done[name] = _compile_twin(fn, ns, parallel, inline, tag)
    return done[name]


_NOTICE_AFTER_S = 1.5  # a cache load takes well under this; a compile far longer


def compile_with_notice(twin, args: tuple, what: str) -> None:
    """Compile (or load from the cache) ``twin`` for the types of ``args`` before it runs; when that takes longer
    than a cache load would (a first run, or after an upgrade), say so on stderr while it works and when done."""
    signature = tuple(numba.typeof(a) for a in args)
    if signature in twin.overloads:
        return
    said = threading.Event()

    def notice():
        said.set()
        where = "not cached: HERMES_CACHE=0" if not CACHE else f"first run only: cached in {CACHE_DIR or 'the sources'}"
        print(f"hermes_fast: compiling {what} ({where}) ...", file=sys.stderr, flush=True)

    timer = threading.Timer(_NOTICE_AFTER_S, notice)
    timer.daemon = True
    start = time.perf_counter()
    timer.start()
    try:
        twin.compile(signature)
    finally:
        timer.cancel()
    if said.is_set():
        print(f"hermes_fast: compiled {what} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
