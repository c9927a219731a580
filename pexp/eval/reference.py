"""Slow, direct references for the evaluators, kept for tests and benchmarks (``make bench``):

- ``autograd_tangent_sensitivity``: the mixed derivative d^2 f_j / (d theta d x) built in full by autograd, one
  input at a time (the closed form is ``pexp.eval.tangent.tangent_sensitivity``);
- ``sweep_margins``: the margin search's attack run at every epsilon of a grid on every point (the per-point
  bisection is ``pexp.eval.margin.minimal_perturbation``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, jacrev

from pexp.eval.margin import _attack, _Geometry


def autograd_tangent_sensitivity(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per-layer ||d^2 f_j / d theta dx||_F^2 from the full mixed derivative, one input at a time:
    shape (N, L, outputs) for a model with ``.blocks`` whose affine weights are ``blocks.<i>.affine.weight``;
    and the largest entry of any bias block (which must vanish for a ReLU network)."""
    params = {name: p.detach() for name, p in model.named_parameters()}

    def output(parameters, x_one):  # noqa: ANN001, ANN202
        return functional_call(model, parameters, (x_one.unsqueeze(0),))[0]

    rows, bias_max = [], 0.0
    for x_one in x:
        mixed = jacrev(jacrev(output, argnums=1), argnums=0)(params, x_one)  # name -> (outputs, *x, *param)
        norms = {name: block.flatten(1).square().sum(1) for name, block in mixed.items()}
        rows.append(torch.stack([norms[f"blocks.{i}.affine.weight"] for i in range(len(model.blocks))]))
        bias_max = max(bias_max, *(float(block.abs().max()) for name, block in mixed.items() if "bias" in name))
    return torch.stack(rows), bias_max


def sweep_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float], *,
                  bounds: Sequence[float] = (-1.0, 1.0), steps: int = 100, rel_stepsize: float = 1 / 25,
                  random_start: bool = False, objective: str = "margin") -> torch.Tensor:
    """l_inf margins by brute force: the margin search's own attack (``pexp.eval.margin``) run at every epsilon of
    ``epsilons`` (ascending) on every point; a point's margin is the smallest epsilon at which it flipped the point
    (0 when it is already misclassified, ``inf`` when no epsilon did). ``model`` returns logits."""
    model = model.eval()
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    geometry = _Geometry(math.inf, bounds, None)
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    margins = torch.full((len(y),), math.inf, dtype=x.dtype, device=device)
    for epsilon in epsilons:
        radius = torch.full((len(y),), float(epsilon), dtype=x.dtype, device=device)
        flipped, _, _ = _attack(model, x, y, radius, radius * rel_stepsize, geometry, steps, objective,
                                random_start)
        margins = torch.where(flipped & torch.isinf(margins), radius, margins)
    return torch.where(wrong, torch.zeros_like(margins), margins).cpu()
