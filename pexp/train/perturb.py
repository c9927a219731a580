"""Algorithm 1 of Nar & Sastry, batched: per-sample worst-case perturbations before the affine layers."""
from __future__ import annotations

import torch

from pexp.models import EntryNet, score


def active_layers(model: EntryNet, layers: str) -> list[bool]:
    """Which entry points get a perturbation: 'all', 'first' (the input only) or 'none'."""
    count = len(model.entry_shapes)
    return {"all": [True] * count, "first": [True] + [False] * (count - 1), "none": [False] * count}[layers]


def eps_at_epoch(eps: float, epoch: int, epochs: int, ramp_steps: int) -> float:
    """The authors' ramp: eps rises in ``ramp_steps`` equal stages over the epochs (0, eps/3, 2eps/3, eps for 4)."""
    if ramp_steps <= 1:
        return float(eps)
    stage = min(epoch * ramp_steps // epochs, ramp_steps - 1)
    return float(eps) * stage / (ramp_steps - 1)


def extreme_perturbations(model: EntryNet, x: torch.Tensor, eps: float, pieces: int,
                          active: list[bool]) -> list[torch.Tensor | None]:
    """For each sample, the perturbations that push the model's score up (argmax) and down (argmin).

    Both searches share one batch of size 2B: rows [0, B) ascend, rows [B, 2B) descend. Each takes ``pieces``
    signed-gradient steps of size eps/pieces from zero, so every perturbation stays in its l_inf ball of radius
    eps without projection. Only gradients with respect to the perturbations are computed, never the weights'.
    Both searches start at zero, where the descending gradient is the ascending one negated: the first step is
    taken from one pass over the B clean samples, the other ``pieces - 1`` over the 2B perturbed ones.
    Returns one tensor per entry point (None where inactive), of batch size 2B: argmax rows first.
    """
    batch = x.shape[0]
    step = eps / pieces
    perturbations = [x.new_zeros((batch, *shape)) if on else None for on, shape in zip(active, model.entry_shapes)]
    leaves = [p.requires_grad_(True) for p in perturbations if p is not None]
    grads = torch.autograd.grad(score(model(x, perturbations)).sum(), leaves)
    with torch.no_grad():
        leaves = [torch.cat([ascent, -ascent]) for ascent in (step * grad.sign() for grad in grads)]
    doubled = torch.cat([x, x])
    direction = torch.cat([x.new_ones(batch), -x.new_ones(batch)])
    for _ in range(pieces - 1):
        iterator = iter(leaves)
        perturbations = [next(iterator).requires_grad_(True) if on else None for on in active]
        objective = (score(model(doubled, perturbations)) * direction).sum()
        grads = torch.autograd.grad(objective, leaves)
        with torch.no_grad():
            leaves = [leaf + step * grad.sign() for leaf, grad in zip(leaves, grads)]
    iterator = iter(leaves)
    return [next(iterator) if on else None for on in active]
