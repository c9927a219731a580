"""Algorithm 1 of Nar & Sastry, batched: per-sample worst-case perturbations before the affine layers."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Iterator

import torch

from pexp.errors import ConfigError
from pexp.models import EntryNet, score
from pexp.schema import cross_check, integer, number, store


class PerturbedLayers(StrEnum):
    none = "none"
    all = "all"
    first = "first"


@dataclass
class PerturbConfig:
    """The perturb group (conf/perturb/*.yaml)."""

    layers: PerturbedLayers = PerturbedLayers.none
    eps: Any = number(0.0, ge=0)  # l_inf radius of each perturbation
    pieces: int = integer(4, ge=1)  # signed-gradient steps of size eps/pieces
    ramp_steps: int = integer(4, ge=1)  # eps rises in this many equal stages over the epochs


store(PerturbConfig, "perturb", "perturb")


@cross_check("perturb")
def check_perturb(cfg: Any) -> None:
    """What the schema cannot say: a radius with nothing to perturb."""
    if cfg.perturb.layers == "none" and cfg.perturb.eps > 0:
        raise ConfigError(f"perturb.eps={cfg.perturb.eps!r} is not allowed with perturb.layers=none (nothing would "
                          f"be perturbed): use perturb=all_layers or perturb=first_layer, or perturb.eps=0")


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


def _projected(outputs: torch.Tensor, directions: torch.Tensor | None) -> torch.Tensor:
    """What Algorithm 1 pushes up and down: the score (binary), or v_i^T f(x_i; d) per sample (``directions``)."""
    return score(outputs) if directions is None else (outputs * directions).sum(1)


COLUMN_STARTS = 4  # per output: the 4k largest columns of J start the ascent beside the 2k other starts
# Columns of J per block of an ascent step: the step's (B, block, starts) products stay in the CPU's cache instead of
# making a round trip through memory (on the PE-net with ten classes, 50 x 6,656 x 54 floats: 1.7x faster per call).
COLUMN_BLOCK = 256


def output_jacobian(model: EntryNet, x: torch.Tensor, active: list[bool]) -> torch.Tensor:
    """Per sample the k x D Jacobian of the k outputs with respect to the perturbations at d = 0, all active entry
    points flattened and stacked: (B, k, D), one backward pass per output."""
    batch = x.shape[0]
    perturbations = [x.new_zeros((batch, *shape)) if on else None for on, shape in zip(active, model.entry_shapes)]
    leaves = [p.requires_grad_(True) for p in perturbations if p is not None]
    outputs = model(x, perturbations)
    rows = []
    for j in range(outputs.shape[1]):
        grads = torch.autograd.grad(outputs[:, j].sum(), leaves, retain_graph=j + 1 < outputs.shape[1])
        rows.append(torch.cat([grad.flatten(1) for grad in grads], dim=1))
    return torch.stack(rows, dim=1).detach()


def output_directions(model: EntryNet, x: torch.Tensor, active: list[bool], rounds: int) -> torch.Tensor:
    """PE section 7.1: per sample the unit v_i in R^k (k outputs) maximising max_d v^T (f(x_i; d) - f(x_i)) over
    the l_inf balls of radius eps at the active entry points, solved on the first-order model f(x; d) ~ f(x) + J d
    (J: :func:`output_jacobian`), where the inner maximum is eps ||J^T v||_1 (:func:`best_directions`). The radius
    only scales the linear objective: v does not depend on it."""
    return best_directions(output_jacobian(model, x, active), rounds)


def direction_starts(jacobian: torch.Tensor) -> torch.Tensor:
    """The unit starting points of :func:`best_directions`, (B, k, (2 + COLUMN_STARTS) k) for Jacobians (B, k, D):
    the k eigenvectors of J J^T (largest eigenvalue first: the l2 relaxation's answer), the k unit vectors e_i
    (their first step is d = sign of row i of J: output i's own worst case) and the COLUMN_STARTS k largest columns
    of J normalised (v along the outputs' move under one influential coordinate; a zero column gives the zero
    vector, which never moves and scores 0). Each start stands for its negative too: the steps are odd in v and
    the objective is even."""
    batch, k, size = jacobian.shape
    eigenvectors = torch.linalg.eigh(jacobian @ jacobian.transpose(1, 2)).eigenvectors.flip(2)
    units = torch.eye(k, dtype=jacobian.dtype, device=jacobian.device).expand(batch, k, k)
    largest = jacobian.square().sum(1).topk(min(COLUMN_STARTS * k, size), dim=1).indices  # the norms' order
    columns = jacobian.gather(2, largest[:, None, :].expand(batch, k, largest.shape[1]))
    columns = columns / columns.norm(dim=1, keepdim=True).clamp_min(torch.finfo(jacobian.dtype).tiny)
    return torch.cat([eigenvectors, units, columns], dim=2)


def best_directions(jacobian: torch.Tensor, rounds: int, starts: torch.Tensor | None = None) -> torch.Tensor:
    """Per Jacobian J (B, k, D) a unit v in R^k with large ||J^T v||_1 (= max over the unit l_inf ball of v^T J d):
    from every start (B, k, S) at once (default :func:`direction_starts`), alternating steps d = sign(J^T v),
    v = J d / ||J d|| (none lowers v^T J d) until no start moves any more or after ``rounds`` steps; per sample
    the start that ends highest (the first on ties: the top eigenvector). One start alone stops at a local
    maximum (on small random ReLU nets, about one sample in seven ends below 99% of the exact maximum), hence
    several. The sign of v is immaterial (-v swaps the argmax and argmin perturbations); it is fixed so that v's
    first entry is >= 0, which makes v = 1 for k = 1 (two classes: the binary Algorithm 1)."""
    v = direction_starts(jacobian) if starts is None else starts
    for _ in range(rounds):
        moved = torch.zeros_like(v)
        for columns, products in _column_blocks(jacobian, v):
            moved.baddbmm_(columns, products.sign_())
        length = moved.norm(dim=1, keepdim=True)
        moved = torch.where(length > 0, moved / length.clamp_min(1e-30), v)
        if torch.equal(moved, v):  # every start at its fixed point: more steps change nothing
            break
        v = moved
    values = sum(products.abs_().sum(1) for _, products in _column_blocks(jacobian, v))  # (B, S)
    best = v.gather(2, values.argmax(1)[:, None, None].expand(-1, v.shape[1], 1)).squeeze(2)
    return torch.where(best[:, :1] < 0, -best, best)


def _column_blocks(jacobian: torch.Tensor, v: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """J^T v by blocks of :data:`COLUMN_BLOCK` columns of J (B, k, D), for starts v (B, k, S): each block's columns
    (B, k, c) and its products (B, c, S), computed into one of two buffers reused from block to block (no new pages
    per block)."""
    batch, _, size = jacobian.shape
    buffers: dict[int, torch.Tensor] = {}
    for first in range(0, size, COLUMN_BLOCK):
        columns = jacobian[:, :, first:first + COLUMN_BLOCK]
        width = columns.shape[2]
        if width not in buffers:
            buffers[width] = jacobian.new_empty(batch, width, v.shape[2])
        yield columns, torch.bmm(columns.transpose(1, 2), v, out=buffers[width])


def extreme_perturbations(model: EntryNet, x: torch.Tensor, eps: float, pieces: int,
                          active: list[bool], directions: torch.Tensor | None = None) -> list[torch.Tensor | None]:
    """For each sample, the perturbations that push the model's score up (argmax) and down (argmin); with
    ``directions`` (B, k) (multi-class, :func:`output_directions`), the argmax and argmin of v_i^T f(x_i; d).

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
    grads = torch.autograd.grad(_projected(model(x, perturbations), directions).sum(), leaves)
    with torch.no_grad():
        leaves = [torch.cat([ascent, -ascent]) for ascent in (step * grad.sign() for grad in grads)]
    doubled = torch.cat([x, x])
    direction = torch.cat([x.new_ones(batch), -x.new_ones(batch)])
    doubled_directions = None if directions is None else torch.cat([directions, directions])
    for _ in range(pieces - 1):
        iterator = iter(leaves)
        perturbations = [next(iterator).requires_grad_(True) if on else None for on in active]
        objective = (_projected(model(doubled, perturbations), doubled_directions) * direction).sum()
        grads = torch.autograd.grad(objective, leaves)
        with torch.no_grad():
            leaves = [leaf + step * grad.sign() for leaf, grad in zip(leaves, grads)]
    iterator = iter(leaves)
    return [next(iterator) if on else None for on in active]
