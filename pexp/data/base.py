"""What every data set is made of: a :class:`Split` pair in a :class:`Dataset`, and where data files are found
and checked (the loaders, one module each, build on this; :mod:`pexp.data` keeps their registry)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch
from omegaconf import DictConfig

from pexp.errors import ConfigError, DataError


@dataclass
class Split:
    """One split of a data set, all in memory: inputs, integer targets, and per-point extras."""

    x: torch.Tensor
    y: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.x[index], self.y[index], {k: v[index] for k, v in self.extras.items()})


@dataclass
class Dataset:
    train: Split
    test: Split
    source: str          # "cifar10" | "mnist" | "synthetic" | "toy": what a figure made from it says
    subspace: torch.Tensor | None = None  # (k, d) orthonormal rows spanning the data's subspace, where known

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def torchvision_datasets() -> ModuleType:
    """``torchvision.datasets``, imported when first needed (the official file lists and checksums, the downloads):
    importing torchvision takes about 1.4 s (it imports torch._dynamo), which every process that reads neither
    CIFAR-10 nor MNIST would pay."""
    import torchvision  # deferred: see above

    return torchvision.datasets


def data_root(cfg: DictConfig) -> Path:
    """data.root when given (on the command line or in a config), else the PEXP_DATA environment variable, else
    ./data: what a user types wins over the environment."""
    root = cfg.get("root") or os.environ.get("PEXP_DATA") or "./data"
    return Path(root).expanduser()


def verify_checksums(cfg: DictConfig) -> bool:
    """data.verify_checksums of a real data set when given (on the command line or in a config), else the
    PEXP_VERIFY_CHECKSUMS environment variable (true | false), else true: false accepts a non-official copy with a
    warning."""
    if cfg.get("verify_checksums") is not None:
        return bool(cfg.verify_checksums)
    value = os.environ.get("PEXP_VERIFY_CHECKSUMS", "true")
    if value.strip().lower() not in ("true", "false"):
        raise ConfigError(f"PEXP_VERIFY_CHECKSUMS={value!r} is not allowed: must be true or false")
    return value.strip().lower() == "true"


def locate_files(cfg: DictConfig, name: str, folder: Path, missing: list[str],
                 download: Callable[[Path], object], how: str) -> Path:
    """``folder`` when nothing is ``missing``; else try ``download(root)`` (unless ``data.download=false``), and
    when that fails stop with one line: where it looked, what is missing, why, and ``how`` to provide the files."""
    if not missing:
        return folder
    reason = "download disabled (data.download=false)"
    if cfg.get("download", True):
        try:
            download(data_root(cfg))
            return folder
        except Exception as error:  # noqa: BLE001 - any failure means: tell the user how to provide the files
            reason = f"download failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
    raise DataError(f"{name} not found: looked for {folder} (missing {', '.join(missing)}); {reason}. {how}")
