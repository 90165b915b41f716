"""Pareto masks against a brute-force check, objective selection and the derived objectives."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import hermes_fast as hf
from hermes_fast.config import ConfigError
from hermes_fast.pareto import nondominated, objective


def brute_force(values: np.ndarray) -> np.ndarray:
    """O(n^2): i is on the front iff it has no NaN and no j is <= in all objectives and < in one."""
    n = len(values)
    out = np.zeros(n, dtype=bool)
    for i in range(n):
        if np.isnan(values[i]).any():
            continue
        out[i] = not any(
            not np.isnan(values[j]).any() and np.all(values[j] <= values[i]) and np.any(values[j] < values[i])
            for j in range(n)
            if j != i
        )
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nondominated_equals_brute_force(k, seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 12, size=(250, k)).astype(float)  # coarse values: many ties and duplicates
    values[rng.random(250) < 0.05, rng.integers(0, k)] = np.nan
    got = nondominated(values)
    np.testing.assert_array_equal(got, brute_force(values))
    assert got.any()


def test_nondominated_by_hand():
    pts = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2], [1, 6], [np.nan, 0]], dtype=float)
    # [3,3] is dominated by [2,2]; [1,6] by [1,5]; the duplicate [2,2]s do not dominate each other
    assert nondominated(pts).tolist() == [True, True, True, False, True, False, False]


def fake_sweep():
    rng = np.random.default_rng(3)
    shape = (4, 3, 2)
    coords = {"workload.rate_per_s": [1.0, 2.0, 4.0, 8.0], "tp": [1, 2, 4], "replicate": [0, 1]}
    ttft = rng.random((*shape, 4))
    ds = xr.Dataset(
        {
            "ttft_s": (("workload.rate_per_s", "tp", "replicate", "quantile"), ttft, {"units": "s"}),
            "cost_usd_per_mtoken": (("workload.rate_per_s", "tp", "replicate"), rng.random(shape) + 0.1),
            "energy_j_per_token": (("workload.rate_per_s", "tp", "replicate"), rng.random(shape) + 0.1),
        },
        coords={**coords, "quantile": [0.5, 0.9, 0.95, 0.99]},
    )
    return ds


def test_pareto_mask_over_swept_dims_equals_brute_force():
    ds = fake_sweep()
    mask = hf.pareto(ds, minimize=["ttft_s[quantile=0.99]"], maximize=["output_token_per_usd", "output_token_per_j"])
    assert mask.dims == ("workload.rate_per_s", "tp") and mask.dtype == bool
    t = ds.ttft_s.sel(quantile=0.99).mean("replicate").values.ravel()
    usd = (1e6 / ds.cost_usd_per_mtoken).mean("replicate").values.ravel()
    joule = (1 / ds.energy_j_per_token).mean("replicate").values.ravel()
    expected = brute_force(np.stack([t, -usd, -joule], axis=1)).reshape(4, 3)
    np.testing.assert_array_equal(mask.values, expected)
    one = ds.isel(replicate=[0])  # with one replicate, maximising 1/x is minimising x (not so for means)
    a = hf.pareto(one, minimize=["ttft_s[quantile=0.99]"], maximize=["output_token_per_usd", "output_token_per_j"])
    b = hf.pareto(one, minimize=[one.ttft_s.sel(quantile=0.99), "cost_usd_per_mtoken", "energy_j_per_token"])
    np.testing.assert_array_equal(a.values, b.values)


def test_derived_objectives_and_attrs():
    ds = hf.add_derived(fake_sweep())
    np.testing.assert_allclose(ds.output_token_per_usd.values, 1e6 / ds.cost_usd_per_mtoken.values)
    assert ds.output_token_per_usd.attrs["units"] == "token/USD"
    assert ds.output_token_per_j.attrs["units"] == "token/J"
    assert objective(ds, "ttft_s[quantile=0.9]").dims == ("workload.rate_per_s", "tp")


@pytest.mark.parametrize(
    "spec, match",
    [
        ("ttft_s", "select quantile"),
        ("ttft", "did you mean 'ttft_s'"),
        ("ttft_s[quantile=0.8]", "a quantile coordinate"),
        ("ttft_s[q=0.9]", "a dim of the Dataset"),
        ("ttft_s[0.9]", "dim=value"),
        ("1x", "a variable name"),
    ],
)
def test_bad_objectives(spec, match):
    with pytest.raises(ConfigError, match=match):
        hf.pareto(fake_sweep(), minimize=[spec])


def test_pareto_of_a_real_sweep_prefers_cheaper_faster_points():
    sc = {
        "engines": [{"name": "main", "model": "llama-3.1-8b", "device": "h100_sxm"}],
        "workload": {"rate_per_s": 5.0, "prompt_tokens": 512, "output_tokens": 64},
    }
    ds = hf.sweep(sc, {"workload.rate_per_s": [2.0, 8.0, 32.0], "engines.main.replicas": [1, 2]}, n_requests=300)
    mask = hf.pareto(ds, minimize=["e2e_s[quantile=0.9]", "cost_usd_per_mtoken"])
    objs = np.stack(
        [
            ds.e2e_s.sel(quantile=0.9).mean("replicate").values.ravel(),
            ds.cost_usd_per_mtoken.mean("replicate").values.ravel(),
        ],
        axis=1,
    )
    np.testing.assert_array_equal(mask.values.ravel(), brute_force(objs))
    # the cheapest point per token (the highest load on one replica) is on the front, as a unique minimum is
    cost = ds.cost_usd_per_mtoken.mean("replicate")
    assert int(np.argmin(cost.values)) == 4
    assert bool(mask.sel({"workload.rate_per_s": 32.0, "engines.main.replicas": 1}))
