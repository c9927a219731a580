"""Margins by a per-point epsilon search on top of batched foolbox 3 PGD.

``minimal_perturbation`` is the one margin search of pexp. For every point it bisects over a grid of epsilons
(0, resolution, 2 resolution, ..., eps_max), running foolbox's PGD on all still-open points at once, each point
at its own epsilon: about 1 + log2(eps_max / resolution) attacks per point instead of one per grid value.
"""
from __future__ import annotations

import math
from typing import Sequence

import eagerpy as ep
import foolbox as fb
import torch
from foolbox.attacks.gradient_descent_base import GDOptimizer
from foolbox.devutils import atleast_kd, flatten
from torch import nn
from tqdm.auto import tqdm


class _PerPointRadius:
    """Mixin for foolbox's PGD attacks: ``epsilon`` may be a 1-D tensor, one radius per point.

    foolbox's ``run`` multiplies the radius into the step size and hands it to ``get_random_start`` and
    ``project`` and the step size to ``get_optimizer``; those are overridden here to broadcast a per-point
    radius (they are foolbox's extension points). Everything else (steps, gradient normalisation, clipping to the
    bounds) is foolbox's own.
    """

    @staticmethod
    def _radius(epsilon, x: ep.Tensor):  # noqa: ANN001, ANN205 - float or eagerpy tensor
        return atleast_kd(epsilon, x.ndim) if isinstance(epsilon, ep.Tensor) else epsilon

    def get_optimizer(self, x: ep.Tensor, stepsize) -> GDOptimizer:  # noqa: ANN001
        return GDOptimizer(x, self._radius(stepsize, x))


class _LinfPGD(_PerPointRadius, fb.attacks.LinfPGD):
    def get_random_start(self, x0: ep.Tensor, epsilon) -> ep.Tensor:  # noqa: ANN001
        return x0 + ep.uniform(x0, x0.shape, -1.0, 1.0) * self._radius(epsilon, x0)

    def project(self, x: ep.Tensor, x0: ep.Tensor, epsilon) -> ep.Tensor:  # noqa: ANN001
        radius = self._radius(epsilon, x0)
        return x0 + ep.minimum(ep.maximum(x - x0, -radius), radius)


class _L2PGD(_PerPointRadius, fb.attacks.L2PGD):
    """l2 PGD; with ``projector`` (a (d, d) orthogonal projection matrix) the random start, every gradient and
    every perturbation are projected onto its range first, so perturbations never leave that subspace."""

    projector: torch.Tensor | None = None

    def _restrict(self, delta: ep.Tensor) -> ep.Tensor:
        if self.projector is None:
            return delta
        flat = delta.raw.reshape(len(delta.raw), -1) @ self.projector
        return ep.astensor(flat.reshape(delta.raw.shape))

    def get_random_start(self, x0: ep.Tensor, epsilon) -> ep.Tensor:  # noqa: ANN001
        start = self._restrict(super().get_random_start(x0, 1.0) - x0)  # a point of the unit ball
        return x0 + start * self._radius(epsilon, x0)

    def normalize(self, gradients: ep.Tensor, *, x: ep.Tensor, bounds) -> ep.Tensor:  # noqa: ANN001
        return super().normalize(self._restrict(gradients), x=x, bounds=bounds)

    def project(self, x: ep.Tensor, x0: ep.Tensor, epsilon) -> ep.Tensor:  # noqa: ANN001
        delta = self._restrict(x - x0)
        norms = ep.maximum(flatten(delta).norms.l2(axis=-1), 1e-12)
        radius = epsilon if isinstance(epsilon, ep.Tensor) else ep.ones_like(norms) * epsilon
        factor = ep.minimum(1.0, radius / norms)
        return x0 + delta * atleast_kd(factor, x.ndim)


NORMS = {"linf": (_LinfPGD, float("inf")), "l2": (_L2PGD, 2.0)}


def _norm(delta: torch.Tensor, p: float) -> torch.Tensor:
    return delta.flatten(1).norm(p=p, dim=1)


def minimal_perturbation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf",
                         bounds: Sequence[float] = (-1.0, 1.0), eps_max: float = 0.1, resolution: float = 0.001,
                         steps: int = 40, rel_stepsize: float = 1 / 30, random_start: bool = True,
                         batch_size: int = 500, progress: bool = False,
                         directions: torch.Tensor | None = None) -> torch.Tensor:
    """For each point, the smallest perturbation norm found that flips the prediction of ``model`` (logits, two
    or more columns): 0 where the point is already misclassified, ``inf`` where PGD finds none up to ``eps_max``.

    The search runs foolbox's PGD (random start, ``steps`` iterations of size ``rel_stepsize * epsilon``) at
    eps_max, then bisects each point's grid interval; the result is the norm of the smallest successful
    perturbation, so it lies within one ``resolution`` of the smallest successful grid epsilon.
    ``directions`` (l2 only): (k, d) orthonormal rows; perturbations are restricted to their span (projected PGD).
    """
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not allowed: choose one of {', '.join(NORMS)}")
    attack_class, p = NORMS[norm]
    attack = attack_class(rel_stepsize=rel_stepsize, steps=steps, random_start=random_start)
    model = model.eval()
    device = next(model.parameters()).device
    if directions is not None:
        if norm != "l2":
            raise ValueError(f"directions restrict l2 attacks only, not norm={norm!r}")
        basis = torch.as_tensor(directions, dtype=x.dtype, device=device)
        attack.projector = basis.T @ basis
    x, y = x.to(device), y.to(device)
    fmodel = fb.PyTorchModel(model, bounds=tuple(bounds), device=device)
    grid_top = max(1, math.ceil(eps_max / resolution - 1e-9))

    with torch.no_grad():
        wrong = torch.cat([model(x[i:i + batch_size]).argmax(1) != y[i:i + batch_size]
                           for i in range(0, len(y), batch_size)])
    best = torch.full((len(y),), math.inf, dtype=x.dtype, device=device)
    best[wrong] = 0.0
    low = torch.zeros(len(y), dtype=torch.long, device=device)           # largest grid index known to fail
    high = torch.full((len(y),), grid_top + 1, dtype=torch.long, device=device)  # smallest known to succeed
    open_points = ~wrong
    rounds = 1 + math.ceil(math.log2(grid_top))
    bar = tqdm(total=rounds, desc="margin search", unit="round", disable=not progress, leave=False)
    while True:  # round 1 attacks every open point at eps_max; a point not flipped there is closed (inf)
        todo = torch.nonzero(open_points & (high - low > 1)).flatten()
        if len(todo) == 0:
            break
        middle = torch.where(high[todo] > grid_top, grid_top, (low[todo] + high[todo]) // 2)
        for i in range(0, len(todo), batch_size):
            chunk, grid_index = todo[i:i + batch_size], middle[i:i + batch_size]
            radius = grid_index.to(x.dtype) * resolution
            adversarial = attack.run(fmodel, x[chunk], fb.criteria.Misclassification(y[chunk]),
                                     epsilon=ep.astensor(radius))
            with torch.no_grad():
                flipped = model(adversarial).argmax(1) != y[chunk]
            size = _norm(adversarial - x[chunk], p)
            high[chunk] = torch.where(flipped, grid_index, high[chunk])
            low[chunk] = torch.where(flipped, low[chunk], grid_index)
            best[chunk] = torch.where(flipped, torch.minimum(best[chunk], size), best[chunk])
        bar.update(1)
    bar.close()
    return best.cpu()
