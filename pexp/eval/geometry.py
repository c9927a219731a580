"""Exact geometry of decision boundaries and data: linear and hard-margin SVM margins, distances to a network's
boundary along given directions, and the PCA spectrum of a data set.

Targets are 0/1 (or -1/+1): target 1 belongs on the positive side of a boundary, target 0 (or -1) on the other.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from scipy.optimize import linprog, minimize
from torch import nn

from pexp.models import score


def _signs(y: torch.Tensor) -> torch.Tensor:
    """Targets 0/1 or -1/+1 as float64 signs -1/+1."""
    if not torch.isin(y, torch.tensor([-1, 0, 1], device=y.device)).all():
        raise ValueError("targets must be 0/1 or -1/+1")
    return torch.where(y == 1, 1.0, -1.0).to(torch.float64)


def _affine(w: torch.Tensor, b: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(w, dtype=torch.float64).flatten()
    if x.ndim != 2 or w.numel() != x.shape[1]:
        raise ValueError(f"x must be (n, {w.numel()}) to match w, got {tuple(x.shape)}")
    if not w.any():
        raise ValueError("w must be nonzero")
    return x.to(torch.float64) @ w.to(x.device) + float(b)


def linear_margin(w: torch.Tensor, b: float | torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Signed Euclidean distance (float64) of each row of ``x`` to the hyperplane w.x + b = 0: positive where the
    point is on its target's side (target 1 on the positive side)."""
    distance = _affine(w, b, x) / torch.as_tensor(w, dtype=torch.float64).norm()
    return _signs(y).to(distance.device) * distance


def linear_margin_linf(w: torch.Tensor, b: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """l_inf distance (float64) of each row of ``x`` to the hyperplane w.x + b = 0: |w.x + b| / ||w||_1."""
    return _affine(w, b, x).abs() / torch.as_tensor(w, dtype=torch.float64).abs().sum()


class SvmMargin(NamedTuple):
    margin: float        # 1 / ||w||: the distance from the hyperplane to the nearest point
    w: torch.Tensor      # (d,) float64, scaled so that min_i s_i (w.x_i + b) = 1
    b: float


def svm_hard_margin(x: torch.Tensor, y: torch.Tensor) -> SvmMargin:
    """The optimal hard-margin SVM of linearly separable data: min ||w||^2 subject to s_i (w.x_i + b) >= 1
    (s = -1/+1 from the targets), solved with scipy's SLSQP from a feasible start found by a linear program."""
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x must be (n, d) with one target per row, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    signs = _signs(y).cpu().numpy()
    if len(np.unique(signs)) != 2:
        raise ValueError("svm_hard_margin needs points of both classes")
    points = x.detach().cpu().to(torch.float64).numpy()
    n, d = points.shape
    constraints = signs[:, None] * np.hstack([points, np.ones((n, 1))])  # rows of s_i (x_i, 1) . (w, b) >= 1
    feasible = linprog(np.zeros(d + 1), A_ub=-constraints, b_ub=-np.ones(n), bounds=[(None, None)] * (d + 1),
                       method="highs")
    if feasible.status != 0:
        raise ValueError("the data are not linearly separable: no hard-margin SVM exists")
    result = minimize(lambda v: v[:d] @ v[:d], feasible.x, jac=lambda v: np.append(2 * v[:d], 0.0),
                      constraints=[{"type": "ineq", "fun": lambda v: constraints @ v - 1,
                                    "jac": lambda v: constraints}],
                      method="SLSQP", options={"ftol": 1e-14, "maxiter": 1000})
    if not result.success:
        raise RuntimeError(f"SLSQP did not converge: {result.message}")
    w, b = result.x[:d], float(result.x[d])
    return SvmMargin(1 / float(np.linalg.norm(w)), torch.from_numpy(w.copy()), b)


def _scores(model: nn.Module, points: torch.Tensor, shape: Sequence[int], batch_size: int) -> torch.Tensor:
    """The model's decision score at each row of ``points`` (flattened inputs), in batches."""
    with torch.no_grad():
        return torch.cat([score(model(chunk.reshape(-1, *shape))) for chunk in points.split(batch_size)])


def offmanifold_distance(model: nn.Module, x: torch.Tensor, normal: torch.Tensor, *, max_distance: float,
                         tolerance: float, threshold: float = 0.0, scan_points: int = 256,
                         batch_size: int = 65536, one_sided: bool = False) -> torch.Tensor:
    """For each point, the smallest t >= 0 such that the model's decision score (``pexp.models.score``) at
    x + t u is on the other side of ``threshold`` than at x, over the directions u = +-normal (or +-each row of an
    (m, d) basis ``normal``); ``inf`` where no direction crosses within ``max_distance``. float64, on the CPU.

    Each ray is scanned on ``scan_points`` equal steps of [0, max_distance] (a pair of crossings closer than one
    step can be missed), then its first crossing is bisected: the result is a distance at which the side has
    changed, at most ``tolerance`` beyond a crossing. ``threshold``: 0 for logits, 0.5 for a squared-error
    model with 0/1 targets. With an (m, d) basis, the minimum over its axes bounds the distance within the
    complement from above. ``x`` may have any shape (n, ...) whose trailing dimensions flatten to d.
    ``one_sided``: only the directions +normal (each row), not their negatives.
    """
    if max_distance <= 0 or tolerance <= 0 or scan_points < 1:
        raise ValueError("max_distance and tolerance must be positive and scan_points at least 1")
    reference = next(model.parameters(), x)
    flat = x.detach().reshape(len(x), -1).to(device=reference.device, dtype=reference.dtype)
    n, d = flat.shape
    basis = torch.atleast_2d(torch.as_tensor(normal)).to(flat)
    if basis.shape[1] != d:
        raise ValueError(f"normal must have {d} columns to match x, got shape {tuple(basis.shape)}")
    if not torch.allclose(basis.norm(dim=1), torch.ones(len(basis)).to(flat), atol=1e-4):
        raise ValueError("every row of normal must be a unit vector")
    directions = basis if one_sided else torch.cat([basis, -basis])  # (r, d)
    r, shape = len(directions), x.shape[1:]

    def sides(t: torch.Tensor) -> torch.Tensor:
        """(n, r, c) distances along the rays -> whether the score there exceeds the threshold."""
        points = flat[:, None, None, :] + t[..., None].to(flat) * directions[None, :, None, :]
        return (_scores(model, points.reshape(-1, d), shape, batch_size) > threshold).reshape(t.shape).cpu()

    start = (_scores(model, flat, shape, batch_size) > threshold).cpu()
    grid = torch.linspace(0.0, max_distance, scan_points + 1, dtype=torch.float64)
    first = torch.full((n, r), scan_points + 1, dtype=torch.long)  # grid index of the first crossing on each ray
    for chunk in torch.arange(1, scan_points + 1).split(max(1, batch_size // (n * r))):
        crossed = sides(grid[chunk].expand(n, r, -1)) != start[:, None, None]
        first = torch.minimum(first, torch.where(crossed.any(2), chunk[0] + crossed.long().argmax(2), first))
        if (first <= scan_points).all():
            break

    point, ray = torch.nonzero(first <= scan_points, as_tuple=True)
    low, high = grid[first[point, ray] - 1], grid[first[point, ray]]
    for _ in range(max(0, math.ceil(math.log2(float(grid[1]) / tolerance)))):
        middle = (low + high) / 2
        moved = (_scores(model, flat[point] + middle[:, None].to(flat) * directions[ray], shape, batch_size)
                 > threshold).cpu() != start[point]
        high, low = torch.where(moved, middle, high), torch.where(moved, low, middle)
    distance = torch.full((n, r), math.inf, dtype=torch.float64)
    distance[point, ray] = high
    return distance.min(dim=1).values


def cumulative_explained_variance(x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Cumulative fraction of the variance of the centred rows of ``x`` (any shape (n, ...)) explained by the
    first k principal components, k = 1..min(n, d): float64, nondecreasing, last entry exactly 1.

    The d x d covariance (or the n x n Gram matrix when n < d) is accumulated in float64 over batches of rows,
    so e.g. 50,000 x 3072 needs one 3072 x 3072 matrix; its eigenvalues are the squared singular values.
    """
    if len(x) < 2:
        raise ValueError("cumulative_explained_variance needs at least two rows")
    flat = x.reshape(len(x), -1)
    n, d = flat.shape
    mean = sum(chunk.to(torch.float64).sum(0) for chunk in flat.split(batch_size)) / n
    if n < d:
        centred = flat.to(torch.float64) - mean
        matrix = sum(columns @ columns.T for columns in centred.split(batch_size, dim=1))
    else:
        matrix = torch.zeros(d, d, dtype=torch.float64, device=flat.device)
        for chunk in flat.split(batch_size):
            rows = chunk.to(torch.float64) - mean
            matrix += rows.T @ rows
    variances = torch.linalg.eigvalsh(matrix).flip(0).clamp(min=0)
    cumulative = variances.cumsum(0)
    if cumulative[-1] <= 0:
        raise ValueError("the data have zero variance")
    return (cumulative / cumulative[-1]).cpu()


def components_for(fractions: torch.Tensor, levels: Sequence[float] = (0.9, 0.95)) -> dict[float, int]:
    """The number of principal components whose cumulative explained variance (``fractions``, from
    :func:`cumulative_explained_variance`) first reaches each level."""
    if any(not 0 < level <= 1 for level in levels):
        raise ValueError(f"levels must lie in (0, 1], got {list(levels)}")
    fractions = fractions.to(torch.float64).cpu()
    return {level: int(torch.searchsorted(fractions, level)) + 1 for level in levels}
