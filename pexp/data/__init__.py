"""Data sets: each returns a :class:`Split` pair (train, test) of tensors, built from a config group."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from omegaconf import DictConfig

from pexp.data.base import Dataset, Split, data_root, locate_files, verify_checksums
from pexp.data.cifar import load_cifar
from pexp.data.mnist import load_mnist, load_mnist_pca
from pexp.data.synthetic import load_synthetic
from pexp.data.toys import TOYS
from pexp.errors import ConfigError
from pexp.schema import cross_check

__all__ = ["DATASETS", "Dataset", "Split", "check_name", "data_root", "load_dataset", "locate_files",
           "verify_checksums"]


def _limit(split: Split, n: int | None) -> Split:
    return split if n is None or n >= len(split) else split.subset(torch.arange(n))


def load_dataset(cfg: DictConfig) -> Dataset:
    """Build the data set named by ``cfg.name`` (a data config group)."""
    check_name(cfg)
    data = DATASETS[cfg.name](cfg)
    return Dataset(_limit(data.train, cfg.get("n_train")), _limit(data.test, cfg.get("n_test")), data.source,
                   data.subspace)


_SYNTHETIC = ("synthetic_cifar2", "synthetic_cifar10", "synthetic_mnist")
# mnist_pca32 loads the images it projects (its ``base`` data config) through this registry too
DATASETS: dict[str, Callable[[DictConfig], Dataset]] = {
    "cifar2": load_cifar, "cifar10": load_cifar, "mnist": load_mnist,
    "mnist_pca32": partial(load_mnist_pca, load_base=load_dataset),
    **{name: load_synthetic for name in _SYNTHETIC}, **TOYS}


def check_name(data: DictConfig) -> None:
    """The data set's name against the registry (each option's schema declares the rest of its keys)."""
    if data.name not in DATASETS:
        raise ConfigError(f"data.name={data.name!r} is not allowed: choose one of {', '.join(sorted(DATASETS))}")


@cross_check("data")
def _check_data(cfg: DictConfig) -> None:
    check_name(cfg.data)
