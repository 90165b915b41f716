"""Pareto fronts over the swept dims of a Dataset, and the objective selection the plots share.

An objective is a variable name, a name with selections (``ttft_s[quantile=0.99]``,
``busy_fraction[pool=decode]``), a derived objective (``output_token_per_usd``, ``output_token_per_j``), or a
DataArray; a renamed variable's old name (:data:`hermes_fast.variables.RENAMED`) works with a FutureWarning.
Objectives are averaged over ``replicate``; what remains must be the swept dims only.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
import xarray as xr

from .config.base import ConfigError, close_match_hint
from .metrics import DERIVED_OBJECTIVES, add_derived
from .variables import current_name

__all__ = ["pareto", "objective", "nondominated", "point_valid"]

_INNER = ("quantile", "pool", "reason", "stage", "link", "bound")
_SPEC = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?:\[(.*)\])?\s*$")


def coord_value(ds: xr.Dataset, dim: str, text: str):
    """The coordinate of ``dim`` that ``text`` names (numbers compared as numbers)."""
    if dim not in ds.coords:
        raise ConfigError(f"[{dim}=...]", dim, f"a dim of the Dataset: {', '.join(map(str, ds.dims))}")
    values = ds[dim].values
    for v in values:
        if str(v) == text:
            return v
        try:
            if float(v) == float(text):
                return v
        except (TypeError, ValueError):
            pass
    raise ConfigError(f"[{dim}={text}]", text, f"a {dim} coordinate: {', '.join(map(str, values))}")


def objective(ds: xr.Dataset, spec: str | xr.DataArray, reduce_replicate: bool = True) -> xr.DataArray:
    """The DataArray an objective spec names in ``ds`` (see the module doc), averaged over ``replicate``."""
    if isinstance(spec, xr.DataArray):
        da = spec
    else:
        m = _SPEC.match(spec) if isinstance(spec, str) else None
        if m is None:
            raise ConfigError("objective", spec, "a variable name, optionally with [dim=value,...], or a DataArray")
        name, sel = m.group(1), m.group(2)
        if name not in ds:  # a renamed variable by its old name (FutureWarning)
            name = current_name(name)
        if name not in ds and name in DERIVED_OBJECTIVES:
            ds = add_derived(ds)
        if name not in ds.data_vars:
            names = sorted(map(str, ds.data_vars)) + [d for d in DERIVED_OBJECTIVES if d not in ds]
            raise ConfigError("objective", name, f"a variable of the Dataset{close_match_hint(name, names)}")
        da = ds[name]
        if sel:
            picks = {}
            for part in sel.split(","):
                dim, eq, value = part.partition("=")
                if not eq:
                    raise ConfigError("objective", spec, "selections as [dim=value,...]")
                picks[dim.strip()] = coord_value(ds, dim.strip(), value.strip())
            da = da.sel(picks)
    if reduce_replicate and "replicate" in da.dims:
        da = da.mean("replicate").assign_attrs(da.attrs)
    return da


def nondominated(values: np.ndarray) -> np.ndarray:
    """Rows of ``values`` (n points x k objectives, all minimised) that no other row dominates.

    Row j dominates row i when it is no worse in every objective and better in one; equal rows do not
    dominate each other; a row with a NaN is never on the front. In lexicographic order a dominating row
    always comes first, and a row dominated by anything is dominated by a front row found before it, so
    each row is compared only with the front so far."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    mask = np.zeros(n, dtype=bool)
    finite = ~np.isnan(values).any(axis=1)
    idx = np.flatnonzero(finite)
    if idx.size == 0:
        return mask
    rows = values[idx]
    order = idx[np.lexsort(rows.T[::-1])]
    front = np.empty_like(values[: idx.size])
    size = 0
    for i in order:
        f = values[i]
        if size:
            cand = front[:size]
            if np.any(np.all(cand <= f, axis=1) & np.any(cand < f, axis=1)):
                continue
        front[size] = f
        size += 1
        mask[i] = True
    return mask


def point_valid(ds: xr.Dataset) -> xr.DataArray | None:
    """Whether each point of ``ds`` is valid (``valid`` in every replicate; points not computed count as valid:
    they have no values), over the swept dims; None when ``ds`` has no ``valid`` variable (e.g. an estimate)."""
    if "valid" not in ds:
        return None
    v = ds["valid"].astype(bool)
    if "replicate" in v.dims:
        v = v.all("replicate")
    if "computed" in ds:
        v = v | ~ds["computed"].astype(bool)
    return v


def pareto(
    ds: xr.Dataset,
    minimize: Sequence[str | xr.DataArray] = (),
    maximize: Sequence[str | xr.DataArray] = (),
    *,
    include_invalid: bool = False,
) -> xr.DataArray:
    """Boolean mask over the swept dims: True where no other point is at least as good in every objective
    and better in one (objectives averaged over ``replicate``; a point with a NaN objective is off the front).

    Invalid points (``valid`` False in some replicate: overloaded, or more than 0.1% of the requests rejected,
    dropped or unfinished, see :data:`hermes_fast.validity.INVALID_REASONS`) are left out unless
    ``include_invalid``: their statistics cover only the requests that were served, or grow with the run's length.
    How many were left out is in the result's ``invalid_left_out`` attr and a ``UserWarning``.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep (or estimate) Dataset.
    minimize, maximize : sequence of str or xarray.DataArray, default ()
        Objectives to minimise and to maximise (at least one in all; a single one may be given alone): a
        variable name, a name with selections (``"ttft_s[quantile=0.99]"``, ``"busy_fraction[pool=decode]"``),
        a derived objective (``"output_token_per_usd"``, ``"output_token_per_j"``: :func:`add_derived`) or a
        DataArray. After the selections and the mean over ``replicate``, each must have only swept dims.
    include_invalid : bool, default False
        Rank invalid points too.

    Returns
    -------
    xarray.DataArray
        ``pareto``, boolean, over the objectives' (broadcast) dims; attr ``invalid_left_out``: the points left
        out as invalid.

    Raises
    ------
    ConfigError
        For no objective, a name that is not a variable of ``ds`` (with a close-match hint), a selection of an
        unknown coordinate, or an objective left with a non-swept dim (``quantile``, ``pool``, ...).

    Examples
    --------
    >>> grid = {"workload.rate_per_s": [2, 8, 32], "engines.llama8b-h100.batching.policy": ["continuous", "chunked"]}
    >>> ds = hf.sweep(grid=grid, n_requests=100, seed=1)
    >>> goals = {"minimize": ["ttft_s[quantile=0.99]"], "maximize": ["output_token_per_usd"]}
    >>> import warnings
    >>> with warnings.catch_warnings():  # it warns: "pareto: left out 2 invalid point(s) ..."
    ...     warnings.simplefilter("ignore")
    ...     front = hf.pareto(ds, **goals)
    >>> front.dims
    ('workload.rate_per_s', 'engines.llama8b-h100.batching.policy')
    >>> front.attrs["invalid_left_out"], ds.invalid_reason.sel({"workload.rate_per_s": 32}).values.ravel().tolist()
    (2, [1, 1])
    >>> front.sel({"workload.rate_per_s": 32}).values.tolist()  # 32/s overloads the engine: both left out
    [False, False]
    >>> ranked = hf.pareto(ds, **goals, include_invalid=True)  # as if they were not overloaded
    >>> ranked.sel({"workload.rate_per_s": 32}).values.tolist()  # ranked as if valid: chunked prefill dominates
    [False, True]
    """
    if isinstance(minimize, (str, xr.DataArray)):
        minimize = [minimize]
    if isinstance(maximize, (str, xr.DataArray)):
        maximize = [maximize]
    specs = [(s, 1.0) for s in minimize] + [(s, -1.0) for s in maximize]
    if len(specs) < 1:
        raise ConfigError("minimize", list(minimize), "at least one objective (minimize or maximize)")
    objs = []
    for spec, sign in specs:
        da = objective(ds, spec)
        extra = [d for d in da.dims if d in _INNER]
        if extra:
            raise ConfigError(
                "objective",
                spec if isinstance(spec, str) else da.name,
                f"one value per point: select {', '.join(extra)} (e.g. ttft_s[quantile=0.99])",
            )
        objs.append(sign * da.astype(np.float64))
    valid = point_valid(ds)
    left_out = 0
    if valid is not None and not include_invalid:
        objs = [o.where(valid) for o in objs]  # NaN: off the front
        left_out = int((~xr.broadcast(valid, *objs)[0]).sum())
        if left_out:
            warnings.warn(
                f"pareto: left out {left_out} invalid point(s) (overloaded, or requests rejected, dropped or "
                "unfinished: see the valid and invalid_reason variables); include_invalid=True ranks them too",
                UserWarning,
                2,
            )
    objs = xr.broadcast(*objs)
    dims = objs[0].dims
    flat = np.stack([o.transpose(*dims).values.ravel() for o in objs], axis=1)
    mask = nondominated(flat).reshape(objs[0].shape)
    return xr.DataArray(
        mask,
        dims=dims,
        coords={d: objs[0][d] for d in dims if d in objs[0].coords},
        name="pareto",
        attrs={"long_name": "on the Pareto front", "units": "1", "invalid_left_out": left_out},
    )
