"""Attention residual surfaces: what the analytical attention model leaves, fitted on a log2 grid of the batch.

Attention kernel libraries pick split-KV factors and tile shapes by heuristics, so a kernel's time is not monotone
in its batch: TRT-LLM's XQA decode on H200 takes 16 us for one sequence of 1024 keys and 13 us for eight of them.
No smooth roofline term follows that, so :func:`hermes_fast.calibration.fit.calibrate` fits, after the analytical
parameters, one smooth surface per attention kernel and element sizes to log(measured / analytical) of its fitted rows
(:class:`hermes_fast.config.efficiency.AttentionResidual`), and the step cost multiplies the kernel's time by the
surface's ratio there (``kernels.step.residual_factor``). Axes (per device): x = sequences x KV heads (decode) or
sequences x query heads (prefill), y = KV tokens per sequence.

The kernels interpolate the nodes' ratios bilinearly, linear in x and y between nodes at whole octaves. The fit is
penalised least squares on those weights: curvature (second differences) along each axis, by
factors chosen apart by leave-one-out error among :data:`SMOOTHING` (a heuristic's step is sharp in one figure and
smooth in the other), and a slight ridge that keeps nodes without rows near their neighbours' trend. A surface is
kept only when its leave-one-out error beats no correction.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..compile import pack_residual
from ..config.efficiency import ATTENTION_RESIDUAL_AXIS_NODES, ATTENTION_RESIDUAL_NODES, AttentionResidual
from ..kernels import layout as L
from ..kernels.step import node_bracket, residual_factor

__all__ = ["SMOOTHING", "evaluate", "fit_residual", "residual_axes"]

SMOOTHING = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # curvature penalties tried, relative to one row's squared residual
_RIDGE = 1e-4  # pull of each node towards no correction
_MIN_ROWS = 6


def residual_axes(decode: bool, batch, heads, kv_heads, kv_tokens_per_seq) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of attention rows: x = sequences x KV heads (decode) or x query heads (prefill), y = KV tokens per
    sequence (cached plus new)."""
    x = np.asarray(batch, dtype=np.float64) * np.asarray(kv_heads if decode else heads, dtype=np.float64)
    return x, np.asarray(kv_tokens_per_seq, dtype=np.float64)


def _packed(r: AttentionResidual) -> np.ndarray:
    p = np.zeros(L.RES_SIZE)
    pack_residual(r, p, 0)
    return p


def evaluate(r: AttentionResidual | None, x, y) -> np.ndarray:
    """The factor the step kernels apply, at each (x, y): the kernels' own interpolation on a packed surface."""
    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    if r is None:
        return np.ones(x.shape)
    p = _packed(r)
    out = [residual_factor(p, 0, xi, yi) for xi, yi in zip(x.ravel(), y.ravel(), strict=True)]
    return np.array(out).reshape(x.shape)


def _grid(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float, float, int, int]:
    """(log2 x0, log2 y0, step, nx, ny): whole-octave nodes spanning the rows, coarser if there would be too many."""
    step = 1.0
    while True:
        x0, y0 = step * math.floor(lx.min() / step), step * math.floor(ly.min() / step)
        nx = int(math.ceil((lx.max() - x0) / step - 1e-9)) + 1
        ny = int(math.ceil((ly.max() - y0) / step - 1e-9)) + 1
        if nx * ny <= ATTENTION_RESIDUAL_NODES and max(nx, ny) <= ATTENTION_RESIDUAL_AXIS_NODES:
            return x0, y0, step, nx, ny
        step *= 2.0


def _weights(surface: AttentionResidual, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each node's weight in each row's factor (rows x nodes, x-major), as the kernel interpolates."""
    p = _packed(surface)
    nx, ny = len(surface.log_ratio), len(surface.log_ratio[0])
    a = np.zeros((x.size, nx * ny))
    for row, (xi, yi) in enumerate(zip(x, y, strict=True)):
        ix, tx = node_bracket(p, L.RES_X_NODES, nx, xi)
        iy, ty = node_bracket(p, L.RES_Y_NODES, ny, yi)
        for jx, wx in ((ix, 1.0 - tx), (min(ix + 1, nx - 1), tx)):
            for jy, wy in ((iy, 1.0 - ty), (min(iy + 1, ny - 1), ty)):
                a[row, jx * ny + jy] += wx * wy
    return a


def _curvature(nx: int, ny: int, along_x: bool) -> np.ndarray:
    """Second differences along x (or y) at every node with a neighbour on both sides."""
    dx, dy = (1, 0) if along_x else (0, 1)
    out = []
    for ix in range(dx, nx - dx):
        for iy in range(dy, ny - dy):
            d = np.zeros(nx * ny)
            d[ix * ny + iy] = -2.0
            d[(ix - dx) * ny + iy - dy] = d[(ix + dx) * ny + iy + dy] = 1.0
            out.append(d)
    return np.array(out).reshape(-1, nx * ny)


def fit_residual(
    kernel: str, compute_bytes: float, kv_bytes: float, x, y, log_ratio, smoothing=SMOOTHING
) -> AttentionResidual | None:
    """The surface fitted to rows at batch figures (x, y) whose analytical prediction is off by ``log_ratio`` =
    log(measured / predicted); None when there are too few rows or it would not beat no correction on
    leave-one-out error. The kernels interpolate the nodes' ratios, so the fit is on ratios."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    excess = np.exp(np.asarray(log_ratio, dtype=np.float64)) - 1.0  # measured / predicted - 1
    if excess.size < _MIN_ROWS:
        return None
    x0, y0, step, nx, ny = _grid(np.log2(x), np.log2(y))
    flat = ((0.0,) * ny,) * nx
    shape = dict(kernel=kernel, compute_bytes=float(compute_bytes), kv_bytes=float(kv_bytes))
    shape.update(log2_x0=float(x0), log2_y0=float(y0), log2_step=step)
    a = _weights(AttentionResidual(**shape, log_ratio=flat), x, y)
    cx, cy = _curvature(nx, ny, True), _curvature(nx, ny, False)
    ata, atr, dxx, dyy = a.T @ a, a.T @ excess, cx.T @ cx, cy.T @ cy
    best = (float(np.mean(excess**2)), None)  # no correction
    for lam_x, lam_y in itertools.product(smoothing, smoothing):
        m = ata + lam_x * dxx + lam_y * dyy + _RIDGE * np.eye(nx * ny)
        v = np.linalg.solve(m, atr)
        hat = np.einsum("ij,ji->i", a, np.linalg.solve(m, a.T))  # diagonal of a m^-1 a^T
        loo = (excess - a @ v) / (1.0 - hat)
        score = float(np.mean(loo**2))
        if score < best[0]:
            best = (score, v)
    if best[1] is None:
        return None
    values = np.log(np.clip(1.0 + best[1], math.exp(-5.0), math.exp(5.0))).reshape(nx, ny)
    return AttentionResidual(**shape, log_ratio=tuple(tuple(float(v) for v in row) for row in values))
