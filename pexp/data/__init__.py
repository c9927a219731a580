"""Data sets: each returns a :class:`Split` pair (train, test) of tensors, built from a config group."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig

from pexp.errors import ConfigError, DataError
from pexp.schema import cross_check


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


def _limit(split: Split, n: int | None) -> Split:
    return split if n is None or n >= len(split) else split.subset(torch.arange(n))


def load_dataset(cfg: DictConfig) -> Dataset:
    """Build the data set named by ``cfg.name`` (a data config group)."""
    check_name(cfg)
    data = DATASETS[cfg.name](cfg)
    return Dataset(_limit(data.train, cfg.get("n_train")), _limit(data.test, cfg.get("n_test")), data.source,
                   data.subspace)


def _registry() -> dict[str, Callable[[DictConfig], Dataset]]:
    from pexp.data.cifar import load_cifar
    from pexp.data.mnist import load_mnist, load_mnist_pca
    from pexp.data.synthetic import load_synthetic
    from pexp.data.toys import TOYS

    synthetic = {name: load_synthetic for name in ("synthetic_cifar2", "synthetic_cifar10", "synthetic_mnist")}
    return {"cifar2": load_cifar, "cifar10": load_cifar, "mnist": load_mnist, "mnist_pca32": load_mnist_pca,
            **synthetic, **TOYS}


DATASETS = _registry()


def check_name(data: DictConfig) -> None:
    """The data set's name against the registry (each option's schema declares the rest of its keys)."""
    if data.name not in DATASETS:
        raise ConfigError(f"data.name={data.name!r} is not allowed: choose one of {', '.join(sorted(DATASETS))}")


@cross_check("data")
def _check_data(cfg: DictConfig) -> None:
    check_name(cfg.data)
