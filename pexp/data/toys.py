"""Small toy data sets of papers PE (pe-fig1, pe-fig2) and OM (offmanifold-fig2..fig6).

Every function takes a data config group and returns a :class:`Dataset` with ``source="toy"``, float32 inputs and
integer targets; the test split is the training split except for :func:`sphere`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable, Optional

import torch
from omegaconf import DictConfig

from pexp.data.base import Dataset, Split
from pexp.errors import ConfigError
from pexp.schema import UNSET, integer, number, store


class GridPlane(StrEnum):
    z05 = "z05"  # the grid at z = 0.5 (offmanifold-fig3)
    xy = "xy"  # the x-y plane (offmanifold-fig5)


class RngOrder(StrEnum):
    authors = "authors"  # the authors' pe-fig1 script's draws
    pexp = "pexp"


class SphereLabels(StrEnum):
    random = "random"
    halfspace = "halfspace"


@dataclass
class FixedPoints:
    """A toy whose points are fixed: ``n_train`` / ``n_test`` are accepted (``scale=smoke`` sets them for every data
    set) and change nothing."""

    n_train: Any = UNSET
    n_test: Any = UNSET


@dataclass
class Diagonal7Config(FixedPoints):
    """data=diagonal7."""

    name: str = "diagonal7"


@dataclass
class Grid25Config(FixedPoints):
    """data=grid25."""

    name: str = "grid25"
    plane: GridPlane = GridPlane.z05


@dataclass
class PeFig1Config(FixedPoints):
    """data=pe_fig1."""

    name: str = "pe_fig1"
    seed: int = integer(1, ge=0)
    rng_order: Optional[RngOrder] = UNSET  # default pexp


@dataclass
class PeFig2Config(FixedPoints):
    """data=pe_fig2."""

    name: str = "pe_fig2"
    variant: int = integer(1, ge=1, le=2)


@dataclass
class SphereConfig:
    """data=sphere28: see sphere."""

    name: str = "sphere"
    dim: int = integer(28, ge=1)
    ambient: int = integer(784, ge=1)
    radius: Any = number(28.0, gt=0)
    labels: SphereLabels = SphereLabels.random
    n_train: int = integer(1000, ge=1)
    n_test: int = integer(200, ge=1)
    seed: int = integer(0, ge=0)


for _schema, _name in ((Diagonal7Config, "diagonal7"), (Grid25Config, "grid25"), (PeFig1Config, "pe_fig1"),
                       (PeFig2Config, "pe_fig2"), (SphereConfig, "sphere")):
    store(_schema, _name, "data")

GRID_PLANES = {"z05": 0.5, "xy": 0.0}  # grid25: cfg.plane -> height z of the data plane in R^3


def _require(cfg: DictConfig, key: str, name: str) -> Any:
    value = cfg.get(key)
    if value is None:
        raise ValueError(f"data.{key} is required by the {name} data set")
    return value


def _toy(x: torch.Tensor, y: torch.Tensor, subspace: torch.Tensor | None = None,
         extras: dict[str, torch.Tensor] | None = None) -> Dataset:
    split = Split(x.float().contiguous(), y.long(), extras or {})
    return Dataset(split, split, source="toy", subspace=subspace)


PE_FIG1_CENTRES = ((7.0, 19.0, 8), (0.0, 5.0, 4), (11.0, 27.0, 4))  # class A, then class B's two groups


def draw_pe_fig1_points(generator: torch.Generator, authors: bool) -> torch.Tensor:
    """The 16 points of pe-fig1 from ``generator``: class A's 8, then class B's two groups of 4; ``authors``
    draws them the authors' way (randn(8, 2), randn(4, 2), randn(4, 2), each times 0.5 plus its centre), else
    as one randn(16, 2) (pexp's earlier order; torch draws a block of 16 differently from blocks of 8 and 4)."""
    centres = torch.tensor([[cx, cy] for cx, cy, n in PE_FIG1_CENTRES for _ in range(n)])
    if not authors:
        return centres + 0.5 * torch.randn(16, 2, generator=generator)
    return torch.cat([torch.randn(n, 2, generator=generator) for _, _, n in PE_FIG1_CENTRES]) * 0.5 + centres


def pe_fig1_points(cfg: DictConfig) -> Dataset:
    """pe-fig1: 16 points in the plane, in this order: class A (target 0) 8 from N([7, 19], 0.5^2 I), then class B
    (target 1) 4 from N([0, 5], 0.5^2 I) and 4 from N([11, 27], 0.5^2 I).

    Reads ``cfg.seed`` (seed of the torch.Generator drawing the points) and ``cfg.rng_order`` (``authors``: drawn
    as the authors' script draws them after ``torch.manual_seed(seed)``; ``pexp``: one block of 16). No subspace.
    """
    generator = torch.Generator().manual_seed(int(_require(cfg, "seed", "pe_fig1")))
    x = draw_pe_fig1_points(generator, cfg.get("rng_order", "pexp") == "authors")
    y = torch.tensor([0] * 8 + [1] * 8)
    return _toy(x, y)


def pe_fig2_points(cfg: DictConfig) -> Dataset:
    """pe-fig2: 20 points per class, class A (target 0) first, then class B (target 1).

    Reads ``cfg.variant``: 1 puts A at (35 + 35 cos t, 35 + 35 sin(t - pi/2.3)) and B at
    (-35 + 58 cos t, -35 + 58 sin(t - pi/8)), t = 2 pi k / 20, k = 0..19 (zero mean overall); 2 puts both on the
    line y = 10 + 20 x, A at x = 3.2 + 0.8 (k + 1) / 20 (in (3.2, 4]) and B at x = 1.2 + 0.8 (k + 1) / 20
    (in (1.2, 2]). No subspace.
    """
    variant = _require(cfg, "variant", "pe_fig2")
    k = torch.arange(20, dtype=torch.float64)
    if variant == 1:
        t = 2 * math.pi * k / 20
        a = torch.stack([35 + 35 * torch.cos(t), 35 + 35 * torch.sin(t - math.pi / 2.3)], dim=1)
        b = torch.stack([-35 + 58 * torch.cos(t), -35 + 58 * torch.sin(t - math.pi / 8)], dim=1)
    elif variant == 2:
        step = 0.8 * (k + 1) / 20
        a = torch.stack([3.2 + step, 10 + 20 * (3.2 + step)], dim=1)
        b = torch.stack([1.2 + step, 10 + 20 * (1.2 + step)], dim=1)
    else:
        raise ValueError(f"data.variant={variant!r} is not allowed: choose 1 or 2")
    return _toy(torch.cat([a, b]), torch.tensor([0] * 20 + [1] * 20))


def diagonal7(cfg: DictConfig) -> Dataset:  # noqa: ARG001 - every data set takes its config group
    """offmanifold-fig2 and fig6: 7 points x = y = -1 + 2k/6 (k = 0..6), targets 0,1,0,1,0,1,0.

    Reads no keys. Subspace: the diagonal, one row (1, 1)/sqrt 2; its normal is (1, -1)/sqrt 2.
    """
    t = -1 + 2 * torch.arange(7, dtype=torch.float64) / 6
    x = torch.stack([t, t], dim=1)
    y = torch.arange(7) % 2
    return _toy(x, y, subspace=torch.tensor([[1.0, 1.0]]) / math.sqrt(2))


def grid25(cfg: DictConfig) -> Dataset:
    """offmanifold-fig3 and fig5: the 25 points (i/4, j/4, z), i, j = 0..4, at index 5 i + j, with checkerboard
    targets (i + j) % 2.

    Reads ``cfg.plane``: "z05" puts the grid at z = 0.5 (fig3), "xy" at z = 0 (fig5). Subspace: the x and y unit
    vectors (rows); the data plane is that subspace shifted by ``extras["offset"]`` = (0, 0, z) at every point,
    so off-manifold distances are measured along z.
    """
    plane = _require(cfg, "plane", "grid25")
    if plane not in GRID_PLANES:
        raise ValueError(f"data.plane={plane!r} is not allowed: choose one of {', '.join(GRID_PLANES)}")
    i, j = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij")
    i, j = i.flatten(), j.flatten()
    offset = torch.tensor([0.0, 0.0, GRID_PLANES[plane]]).expand(25, 3)
    x = torch.stack([i / 4, j / 4, torch.zeros(25)], dim=1) + offset
    subspace = torch.eye(3)[:2]
    return _toy(x, (i + j) % 2, subspace=subspace, extras={"offset": offset.contiguous()})


SPHERE_LABELS = tuple(SphereLabels)


def sphere(cfg: DictConfig) -> Dataset:
    """offmanifold-fig4 (a): points uniform on the sphere of radius ``cfg.radius`` (default 1) in R^dim, embedded
    in R^ambient by a random orthogonal map (Q of the QR factorisation of a Gaussian (ambient, dim) matrix, signs
    fixed so it is Haar).

    Reads ``cfg.n_train``, ``cfg.n_test``, ``cfg.dim``, ``cfg.ambient``, ``cfg.radius``, ``cfg.labels`` and
    ``cfg.seed`` (one torch.Generator draws the map, then the train points and labels, then the test ones).
    Targets: ``labels=random`` (the authors') half of each split 1 and half 0 in a random order, independent of the
    points; ``labels=halfspace`` 1 where the first intrinsic coordinate is positive (a random half-space of the
    subspace, since the map is random). Subspace: the (dim, ambient) orthonormal rows of the map.
    """

    name = "sphere"
    dim, ambient = int(_require(cfg, "dim", name)), int(_require(cfg, "ambient", name))
    if not 0 < dim <= ambient:
        raise ConfigError(f"data.dim={dim} is not allowed: must be in [1, data.ambient={ambient}]")
    radius, labels = float(cfg.get("radius", 1.0)), cfg.get("labels", "halfspace")
    if not radius > 0:
        raise ConfigError(f"data.radius={radius} is not allowed: must be > 0")
    if labels not in SPHERE_LABELS:
        raise ConfigError(f"data.labels={labels!r} is not allowed: choose one of {', '.join(SPHERE_LABELS)}")
    generator = torch.Generator().manual_seed(int(_require(cfg, "seed", name)))
    q, r = torch.linalg.qr(torch.randn(ambient, dim, generator=generator, dtype=torch.float64))
    embedding = q * torch.sign(torch.diagonal(r))

    def draw(n: int) -> Split:
        z = torch.randn(n, dim, generator=generator, dtype=torch.float64)
        z = radius * z / z.norm(dim=1, keepdim=True)
        if labels == "random":
            y = (torch.arange(n) % 2)[torch.randperm(n, generator=generator)]
        else:
            y = (z[:, 0] > 0).long()
        return Split((z @ embedding.T).float(), y)

    train = draw(int(_require(cfg, "n_train", name)))
    test = draw(int(_require(cfg, "n_test", name)))
    return Dataset(train, test, source="toy", subspace=embedding.T.float().contiguous())


TOYS: dict[str, Callable[[DictConfig], Dataset]] = {
    "pe_fig1": pe_fig1_points, "pe_fig2": pe_fig2_points, "diagonal7": diagonal7, "grid25": grid25,
    "sphere": sphere,
}
