"""MNIST from torchvision's raw on-disk layout (``<root>/MNIST/raw``, IDX files), checksums verified by default,
and the MNIST-PCA32 task of offmanifold-fig4 (b)."""
from __future__ import annotations

import gzip
import hashlib
import warnings
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from pexp.data.base import Dataset, Split, data_root, locate_files, torchvision_datasets, verify_checksums
from pexp.errors import ConfigError, DataError
from pexp.schema import UNSET, flag, integer, store


@dataclass
class MnistConfig:
    """data=mnist (conf/data/mnist.yaml)."""

    name: str = "mnist"
    root: Optional[str] = None
    digits: Any = None  # null: all ten digits; else a list, relabelled 0..k-1 by position
    verify_checksums: Any = flag()  # unset: PEXP_VERIFY_CHECKSUMS, else true (pexp.data.verify_checksums)
    download: Any = flag(True)
    n_train: Optional[int] = integer(None, ge=1, null=True)
    n_test: Optional[int] = integer(None, ge=1, null=True)


class Projection(StrEnum):
    linear = "linear"  # x V V^T
    affine = "affine"  # mean + (x - mean) V V^T
    none = "none"  # the images unprojected


@dataclass
class MnistPcaConfig:
    """data=mnist_pca32 and its variants (conf/data/mnist_pca32*.yaml, synthetic_mnist_pca32.yaml)."""

    name: str = "mnist_pca32"
    components: int = integer(32, ge=1)
    projection: Projection = Projection.linear
    positive: Any = None  # null: the ten digits; else the digits that make target 1
    n_train: Optional[int] = integer(None, ge=1, null=True)
    n_test: Optional[int] = integer(None, ge=1, null=True)
    base: Any = UNSET  # the data config of the images projected (mnist or synthetic_mnist)


store(MnistConfig, "mnist", "data")
store(MnistPcaConfig, "mnist_pca32", "data")

FOLDER = Path("MNIST") / "raw"
FILES = {  # name -> MD5 of the official uncompressed IDX file
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def _open(path: Path):
    """The IDX file itself, else its .gz copy (torchvision keeps both)."""
    if path.is_file():
        return open(path, "rb")
    return gzip.open(path.with_name(path.name + ".gz"), "rb")


def _present(path: Path) -> bool:
    return path.is_file() or path.with_name(path.name + ".gz").is_file()


def _locate(cfg: DictConfig) -> Path:
    folder = data_root(cfg) / FOLDER
    missing = [name for name in FILES if not _present(folder / name)]

    def download(root: Path) -> object:
        return torchvision_datasets().MNIST(str(root), train=True, download=True)

    return locate_files(
        cfg, "MNIST", folder, missing, download,
        f"Put the four IDX files ({', '.join(FILES)}, optionally .gz) under <folder>/MNIST/raw and set "
        f"PEXP_DATA=<folder> (or data.root=<folder>), or ask for the synthetic stand-in (data=synthetic_mnist, "
        f"data=synthetic_mnist_pca32, or synthetic=true for a figure).")


def _verify(folder: Path, verify: bool) -> None:
    bad = []
    for name, expected in FILES.items():
        with _open(folder / name) as handle:
            digest = hashlib.md5(handle.read()).hexdigest()
        if digest != expected:
            bad.append(name)
    if bad and verify:
        raise DataError(f"MNIST files in {folder} fail the official MD5 checksum ({', '.join(bad)}); if this is a "
                        f"known non-official copy, rerun with data.verify_checksums=false (every run: "
                        f"PEXP_VERIFY_CHECKSUMS=false) to accept it with a warning")
    if bad:
        warnings.warn(f"MNIST in {folder} is not the official release ({len(bad)} files differ); accepted because "
                      f"data.verify_checksums (or PEXP_VERIFY_CHECKSUMS) is false", stacklevel=2)


def _read_idx(path: Path) -> np.ndarray:
    with _open(path) as handle:
        raw = handle.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(cfg: DictConfig) -> Dataset:
    """All of MNIST (or the digits ``cfg.digits``, relabelled 0..k-1 by position), 1x28x28 pixels in [0, 1]."""
    folder = _locate(cfg)
    _verify(folder, verify_checksums(cfg))
    splits = []
    for prefix in ("train", "t10k"):
        images = _read_idx(folder / f"{prefix}-images-idx3-ubyte")
        labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte").astype(np.int64)
        digits = cfg.get("digits")
        keep = np.isin(labels, list(digits)) if digits is not None else np.ones(len(labels), dtype=bool)
        targets = labels[keep]
        if digits is not None:
            position = np.full(10, -1, dtype=np.int64)
            position[list(digits)] = np.arange(len(digits))
            targets = position[targets]
        x = torch.from_numpy(images[keep].copy()).float().div_(255.0).unsqueeze(1)
        splits.append(Split(x, torch.from_numpy(targets),
                            {"lossless": torch.ones(int(keep.sum()), dtype=torch.bool)}))
    return Dataset(splits[0], splits[1], source="mnist")


PROJECTIONS = ("linear", "affine", "none")


def load_mnist_pca(cfg: DictConfig, load_base: Callable[[DictConfig], Dataset]) -> Dataset:
    """offmanifold-fig4 (b): MNIST (``cfg.base``: the config of mnist or synthetic_mnist) projected onto the top
    ``cfg.components`` principal directions V (d x k) of its training images (eigenvectors of the centred scatter
    matrix), kept in R^784. ``cfg.projection``: "linear" x -> x V V^T (no centring: the authors' projection, so
    every point lies in the span of V), "affine" x -> mean + (x - mean) V V^T (the data lie in that span shifted
    by the part of the mean off it) or "none" (the images as they are: a network trained on them, attacked on and
    off the span of V). Targets: the ten digits when ``cfg.positive`` is null, else 1 for the digits
    in ``cfg.positive`` and 0 otherwise. Subspace: V^T (k x 784 rows), to split perturbations on / off it.
    ``load_base``: what builds the base data set from its config (:func:`pexp.data.load_dataset`).
    """
    projection = cfg.get("projection", "affine")
    if projection not in PROJECTIONS:
        raise ConfigError(f"data.projection={projection!r} is not allowed: choose one of {', '.join(PROJECTIONS)}")
    base = load_base(cfg.base)
    flat = base.train.x.reshape(len(base.train), -1).double()
    mean = flat.mean(0)
    centred = flat - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues of the scatter matrix
    basis = vectors[:, -int(cfg.components):].flip(1).T
    shift = mean if projection == "affine" else torch.zeros_like(mean)
    positive = cfg.get("positive")

    def project(split: Split) -> Split:
        centred = split.x.reshape(len(split), -1).double() - shift
        x = split.x if projection == "none" else (shift + centred @ basis.T @ basis).float().reshape(split.x.shape)
        y = split.y if positive is None else torch.isin(split.y, torch.tensor(list(positive))).long()
        return Split(x, y, dict(split.extras))

    return Dataset(project(base.train), project(base.test), base.source, subspace=basis.float().contiguous())
