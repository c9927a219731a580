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


def principal_variances(x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """The squared singular values of the centred rows of ``x`` (any shape (n, ...), flattened per row), all
    min(n, d) of them, descending, float64: the variances of the principal components times n.

    The d x d covariance (or the n x n Gram matrix when n < d) is accumulated in float64 over batches of rows,
    so e.g. 50,000 x 3072 needs one 3072 x 3072 matrix; its eigenvalues are the squared singular values.
    """
    if len(x) < 2:
        raise ValueError("the principal components need at least two rows")
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
    return torch.linalg.eigvalsh(matrix).flip(0).clamp(min=0).cpu()


def explained_fractions(squares: torch.Tensor) -> torch.Tensor:
    """Cumulative fraction of the variance explained by the first k principal components, k = 1..len(squares),
    from :func:`principal_variances`: float64, nondecreasing, last entry exactly 1."""
    cumulative = squares.to(torch.float64).cumsum(0)
    if cumulative[-1] <= 0:
        raise ValueError("the data have zero variance")
    return cumulative / cumulative[-1]


def cumulative_explained_variance(x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """:func:`explained_fractions` of the centred rows of ``x`` (:func:`principal_variances`)."""
    return explained_fractions(principal_variances(x, batch_size))


RANK_EPS = float(torch.finfo(torch.float32).eps)  # the precision the models compute their activations in


def numerical_rank(squares: torch.Tensor, shape: tuple[int, int], eps: float = RANK_EPS) -> int:
    """The numerical rank of a centred n x d matrix (``shape``) from its squared singular values
    (:func:`principal_variances`): how many singular values exceed max(n, d) * eps * the largest one, the
    tolerance of numpy's ``matrix_rank``, with eps float32's machine epsilon (activations are float32).

    The float64 covariance resolves singular values down to about sqrt(max(n, d) * eps_float64) =
    1.5e-8 sqrt(max(n, d)) of the largest (its rounding grows at most with n and d), at least 8 times below this
    tolerance (1.2e-7 max(n, d))."""
    singular = squares.to(torch.float64).clamp(min=0).sqrt()
    if len(singular) == 0 or singular.max() <= 0:
        return 0
    return int((singular > max(shape) * eps * singular.max()).sum())


def components_for(fractions: torch.Tensor, levels: Sequence[float] = (0.9, 0.95)) -> dict[float, int]:
    """The number of principal components whose cumulative explained variance (``fractions``, from
    :func:`cumulative_explained_variance`) first reaches each level."""
    if any(not 0 < level <= 1 for level in levels):
        raise ValueError(f"levels must lie in (0, 1], got {list(levels)}")
    fractions = fractions.to(torch.float64).cpu()
    return {level: int(torch.searchsorted(fractions, level)) + 1 for level in levels}


def _one_hidden_layer(model: nn.Module) -> tuple[torch.Tensor, ...] | None:
    """(W1, b1, w2, c, negative slope) of a one-hidden-layer ReLU / leaky-ReLU network on 2D inputs, in float64,
    with its output reduced to the score (f, or logit_1 - logit_0); None for any other architecture."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) != 2:
        return None
    first, last = blocks[0], blocks[1]
    if not isinstance(first.affine, nn.Linear) or not isinstance(last.affine, nn.Linear) \
            or first.affine.in_features != 2 or not isinstance(last.activation, nn.Identity) \
            or not isinstance(first.after, (nn.Identity, nn.Dropout)):
        return None
    if isinstance(first.activation, nn.ReLU):
        slope = 0.0
    elif isinstance(first.activation, nn.LeakyReLU):
        slope = float(first.activation.negative_slope)
    else:
        return None
    w1, b1 = first.affine.weight.detach().double().cpu(), first.affine.bias.detach().double().cpu()
    w2, b2 = last.affine.weight.detach().double().cpu(), last.affine.bias.detach().double().cpu()
    if w2.shape[0] == 1:
        return w1, b1, w2[0], b2[0], slope
    if w2.shape[0] == 2:
        return w1, b1, w2[1] - w2[0], b2[1] - b2[0], slope
    return None


def exact_margins_2d(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threshold: float = 0.0) -> torch.Tensor | None:
    """Exact Euclidean distance (float64) from each 2D point to its network's decision boundary {score = threshold},
    0 where the point is misclassified, for a one-hidden-layer (leaky) ReLU network; None for other architectures.

    The score is affine inside each cell of the arrangement of the hidden units' lines, so the boundary is a union
    of segments and rays, each ending on a unit's line. Candidates: (ii) every point of a unit's line where the
    score equals the threshold (along the line the score is piecewise linear between its crossings with the other
    lines, so these zeros are exact), and (i) for the two cells on either side of each such point and the point's
    own cell, the foot of the perpendicular on that cell's boundary line, when it lies in the cell. The nearest
    candidate is the nearest boundary point.
    """
    parts = _one_hidden_layer(model)
    if parts is None:
        return None
    w1, b1, w2, c, slope = parts
    points = torch.as_tensor(x, dtype=torch.float64).cpu()
    on_lines, unit = _boundary_points_on_lines(w1, b1, w2, c, slope, threshold)  # each on the line of unit[i]
    rows = torch.arange(len(unit))
    sides = []
    for activation in (1.0, slope):  # the two cells on either side of each boundary point on a line
        pattern = _pattern(w1, b1, on_lines, slope)
        pattern[rows, unit] = activation
        sides.append(pattern)
    own = _pattern(w1, b1, points, slope)
    cells = torch.cat([*sides, own])                      # (K, H) activation slopes per unit
    gradient = cells * w2 @ w1                                    # (K, 2): the score's gradient in each cell
    offset = (cells * w2 * b1).sum(1) + c - threshold             # score - threshold = gradient . x + offset
    usable = gradient.norm(dim=1) > 1e-12
    gradient, offset, cells = gradient[usable], offset[usable], cells[usable]
    # the foot of the perpendicular from every point on every cell's boundary line: (n, K, 2)
    along = (points @ gradient.T + offset) / gradient.square().sum(1)
    feet = points[:, None, :] - along[..., None] * gradient[None]
    pre = feet @ w1.T + b1                                        # (n, K, H) pre-activations at the feet
    tolerance = 1e-9 * (1 + pre.abs())
    inside = torch.where(cells[None] == 1.0, pre >= -tolerance, pre <= tolerance).all(-1)
    distance_feet = torch.where(inside, (feet - points[:, None, :]).norm(dim=-1), torch.full_like(along, math.inf))
    distance = distance_feet.amin(1) if distance_feet.shape[1] else torch.full((len(points),), math.inf)
    if len(on_lines):
        distance = torch.minimum(distance, torch.cdist(points, on_lines).amin(1))
    values = (_pattern(w1, b1, points, slope) * (points @ w1.T + b1)) @ w2 + c
    right = torch.where(torch.as_tensor(y).cpu() == 1, values > threshold, values <= threshold)
    return torch.where(right, distance, torch.zeros_like(distance))


def _pattern(w1: torch.Tensor, b1: torch.Tensor, points: torch.Tensor, slope: float) -> torch.Tensor:
    """The activation slope (1 or ``slope``) of every unit at every point: (n, H)."""
    return torch.where(points @ w1.T + b1 > 0, 1.0, slope).to(torch.float64)


def _boundary_points_on_lines(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, c: torch.Tensor, slope: float,
                              threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """All points where the score equals ``threshold`` on the hidden units' lines {w1_k . x + b1_k = 0}: (m, 2)
    points and the (m,) unit whose line each lies on. Along line k the score is linear between consecutive
    crossings with the other lines, so each interval (and each unbounded end) holds at most one zero, found
    exactly by linear interpolation."""
    found, units = [], []
    for k in range(len(b1)):
        normal = w1[k]
        if normal.norm() < 1e-12:
            continue
        base = -b1[k] * normal / normal.square().sum()
        direction = torch.stack([-normal[1], normal[0]]) / normal.norm()
        rate = w1 @ direction                                     # d pre-activation / d tau, per unit
        crossing = -(w1 @ base + b1) / torch.where(rate.abs() > 1e-12, rate, torch.ones_like(rate))
        taus = torch.sort(crossing[(rate.abs() > 1e-12) & (torch.arange(len(b1)) != k)]).values
        if len(taus) == 0:
            taus = torch.zeros(1, dtype=torch.float64)
        # the score at the breakpoints, and its slope beyond the first and the last one
        knots = torch.cat([taus[:1] - 1.0, taus, taus[-1:] + 1.0])
        on_line = base[None] + knots[:, None] * direction[None]
        pre = on_line @ w1.T + b1
        pre[:, k] = 0.0
        score = (torch.where(pre > 0, 1.0, slope) * pre) @ w2 + c - threshold
        for i in range(len(knots) - 1):
            a, b = score[i], score[i + 1]
            if a == 0:
                tau = knots[i]
            elif a * b < 0:
                tau = knots[i] + (knots[i + 1] - knots[i]) * a / (a - b)
            else:
                continue
            found.append(base + tau * direction)
            units.append(k)
        for end, sign in ((0, -1.0), (len(knots) - 1, 1.0)):     # the unbounded ends: a linear continuation
            inner = 1 if end == 0 else len(knots) - 2
            step = (score[end] - score[inner]) / (knots[end] - knots[inner])
            if step.abs() > 1e-15:
                tau = knots[end] - score[end] / step
                if (tau - knots[end]) * sign > 0:
                    found.append(base + tau * direction)
                    units.append(k)
        if score[-1] == 0:
            found.append(base + knots[-1] * direction)
            units.append(k)
    if not found:
        return torch.zeros(0, 2, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    return torch.stack(found), torch.tensor(units)
