"""A deterministic synthetic stand-in for cifar2 (3x32x32 images in [-1, 1], two classes, low-dimensional)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from pexp.data import Dataset, Split


def _patterns(rank: int, generator: torch.Generator) -> torch.Tensor:
    """``rank`` orthonormal smooth 3x32x32 patterns (random 8x8 fields upsampled), as a (rank, 3072) matrix."""
    coarse = torch.randn(rank, 3, 8, 8, generator=generator)
    smooth = F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False).reshape(rank, -1)
    basis, _ = torch.linalg.qr(smooth.T)
    return basis.T.contiguous()


def _sample(n: int, basis: torch.Tensor, cfg: DictConfig, generator: torch.Generator) -> Split:
    rank = basis.shape[0]
    targets = torch.arange(n) % 2
    coefficients = torch.randn(n, rank, generator=generator) * float(cfg.spread)
    coefficients[:, 0] = (targets.float() * 2 - 1) * float(cfg.separation) / 2 \
        + torch.randn(n, generator=generator) * float(cfg.class_std)
    scale = basis.shape[1] ** 0.5 * 0.1  # a unit coefficient moves each pixel by about 0.1
    images = coefficients @ basis * scale + torch.randn(n, basis.shape[1], generator=generator) * float(cfg.noise)
    order = torch.randperm(n, generator=generator)
    x = images.clamp(-1, 1).reshape(n, 3, 32, 32)[order]
    return Split(x.contiguous(), targets[order], {"lossless": torch.ones(n, dtype=torch.bool)})


def load_synthetic_cifar2(cfg: DictConfig) -> Dataset:
    generator = torch.Generator().manual_seed(int(cfg.seed))
    basis = _patterns(int(cfg.rank), generator)
    train = _sample(int(cfg.n_train), basis, cfg, generator)
    test = _sample(int(cfg.n_test), basis, cfg, generator)
    return Dataset(train, test, source="synthetic")
