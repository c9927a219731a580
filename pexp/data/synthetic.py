"""Deterministic synthetic stand-ins for CIFAR-10 / MNIST: images near a low-dimensional subspace of smooth patterns,
classes separated along the first patterns. Never used unless asked for; figures made from them say so."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from pexp.data.base import Dataset, Split
from pexp.schema import UNSET, integer, number, store


@dataclass
class SyntheticConfig:
    """data=synthetic_cifar2, synthetic_cifar10, synthetic_mnist: offline stand-ins (conf/data/synthetic_*.yaml)."""

    name: str = "synthetic_cifar2"
    n_train: int = integer(10000, ge=1)
    n_test: int = integer(2000, ge=1)
    classes: Optional[int] = integer(ge=2, null=True)  # default 2
    shape: Any = UNSET  # default [3, 32, 32]
    range: Any = UNSET  # default [-1.0, 1.0]
    rank: int = integer(8, ge=1, le=3 * 32 * 32)  # dimension of the pattern subspace
    separation: Any = number(3.0)  # distance of the two class means along the first pattern
    class_std: Any = number(0.5, ge=0)
    spread: Any = number(1.5, ge=0)
    noise: Any = number(0.02, ge=0)
    seed: int = integer(0, ge=0)


store(SyntheticConfig, "synthetic", "data")


def _patterns(rank: int, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """``rank`` orthonormal smooth patterns of ``shape`` (random coarse fields upsampled), as a (rank, d) matrix."""
    channels, height, width = shape
    coarse = torch.randn(rank, channels, max(height // 4, 1), max(width // 4, 1), generator=generator)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False).reshape(rank, -1)
    basis, _ = torch.linalg.qr(smooth.T)
    return basis.T.contiguous()


def _class_means(classes: int, separation: float) -> torch.Tensor:
    """Per-class means of the first pattern coefficients: +-separation/2 along pattern 0 for two classes; for more,
    the vertices of a regular simplex (unit vectors e_c minus their mean, scaled to pairwise distance ``separation``)."""
    if classes == 2:
        return torch.tensor([[-separation / 2], [separation / 2]])
    simplex = torch.eye(classes) - 1.0 / classes
    return simplex * separation / 2 ** 0.5


def _sample(n: int, basis: torch.Tensor, cfg: DictConfig, generator: torch.Generator) -> Split:
    rank = basis.shape[0]
    classes = int(cfg.get("classes", 2))
    shape = tuple(cfg.get("shape", (3, 32, 32)))
    low, high = cfg.get("range", (-1.0, 1.0))
    targets = torch.arange(n) % classes
    means = _class_means(classes, float(cfg.separation))
    coefficients = torch.randn(n, rank, generator=generator) * float(cfg.spread)
    k = means.shape[1]
    noise = torch.randn(n, generator=generator) if k == 1 else torch.randn(n, k, generator=generator)
    coefficients[:, :k] = means[targets] + noise.reshape(n, k) * float(cfg.class_std)
    scale = basis.shape[1] ** 0.5 * 0.1 * (high - low) / 2  # a unit coefficient moves each pixel by ~5% of the range
    centre = (high + low) / 2
    images = centre + coefficients @ basis * scale \
        + torch.randn(n, basis.shape[1], generator=generator) * float(cfg.noise) * (high - low) / 2
    order = torch.randperm(n, generator=generator)
    x = images.clamp(low, high).reshape(n, *shape)[order]
    return Split(x.contiguous(), targets[order], {"lossless": torch.ones(n, dtype=torch.bool)})


def load_synthetic(cfg: DictConfig) -> Dataset:
    """``cfg.classes`` classes (2 by default) of images of ``cfg.shape`` (3x32x32) in ``cfg.range`` ([-1, 1])."""
    generator = torch.Generator().manual_seed(int(cfg.seed))
    basis = _patterns(int(cfg.rank), tuple(cfg.get("shape", (3, 32, 32))), generator)
    train = _sample(int(cfg.n_train), basis, cfg, generator)
    test = _sample(int(cfg.n_test), basis, cfg, generator)
    return Dataset(train, test, source="synthetic")
