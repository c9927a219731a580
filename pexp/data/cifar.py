"""CIFAR-10 from torchvision's on-disk layout (``<root>/cifar-10-batches-py``), checksums verified by default."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional
import functools
import hashlib
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from pexp.data.base import Dataset, Split, data_root, locate_files, torchvision_datasets, verify_checksums
from pexp.errors import DataError
from pexp.schema import flag, integer, integers, store


@dataclass
class CifarConfig:
    """data=cifar10 (conf/data/cifar10.yaml); data=cifar2 is two of its classes."""

    name: str = "cifar10"
    root: Optional[str] = None  # this when given, else $PEXP_DATA, else ./data
    classes: Any = integers(list(range(10)), ge=0, le=9, distinct=True)  # CIFAR-10 labels; position = target
    verify_checksums: Any = flag()  # unset: PEXP_VERIFY_CHECKSUMS, else true (pexp.data.verify_checksums)
    download: Any = flag(True)  # try torchvision's download when the files are absent
    n_train: Optional[int] = integer(None, ge=1, null=True)  # null: all
    n_test: Optional[int] = integer(None, ge=1, null=True)


@dataclass
class Cifar2Config(CifarConfig):
    """data=cifar2 (conf/data/cifar2.yaml): two CIFAR-10 classes."""

    name: str = "cifar2"
    classes: Any = integers([0, 7], ge=0, le=9, length=2, distinct=True)


store(CifarConfig, "cifar10", "data")
store(Cifar2Config, "cifar2", "data")

FOLDER = "cifar-10-batches-py"
LOSSLESS_MASK = "cifar-10-batches-py.test_is_lossless.npy"  # optional: marks test images known to be exact


@functools.cache
def official_files() -> tuple[list[str], list[str], dict[str, str]]:
    """The official release's training files, test files and each file's MD5, as torchvision records them."""
    release = torchvision_datasets().CIFAR10
    return ([name for name, _ in release.train_list], [name for name, _ in release.test_list],
            dict(release.train_list + release.test_list))


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _locate(cfg: DictConfig) -> Path:
    folder = data_root(cfg) / FOLDER
    train_files, test_files, _ = official_files()
    missing = [name for name in train_files + test_files if not (folder / name).is_file()]
    return locate_files(
        cfg, "CIFAR-10", folder, missing,
        lambda root: torchvision_datasets().CIFAR10(str(root), train=True, download=True),
        f"Put the python version of CIFAR-10 ({FOLDER}/data_batch_1..5, test_batch) under a folder and "
        f"set PEXP_DATA=<that folder> (or data.root=<folder>), or use data=synthetic_cifar2 for a synthetic stand-in.")


def _verify(folder: Path, verify: bool) -> bool:
    """True when every file has its official MD5. A mismatch is an error unless ``verify`` is False."""
    train_files, test_files, official = official_files()
    bad = [name for name in train_files + test_files if _md5(folder / name) != official[name]]
    if bad and verify:
        raise DataError(
            f"CIFAR-10 files in {folder} fail the official MD5 checksum ({', '.join(bad)}); if this is a known "
            f"non-official copy, rerun with data.verify_checksums=false (every run: PEXP_VERIFY_CHECKSUMS=false) to "
            f"accept it with a warning"
        )
    if bad:
        warnings.warn(f"CIFAR-10 in {folder} is not the official release ({len(bad)} files differ from the "
                      f"official MD5s); accepted because data.verify_checksums (or "
                      f"PEXP_VERIFY_CHECKSUMS) is false", stacklevel=2)
    return not bad


def _read_batches(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _to_unit_range(images: np.ndarray) -> torch.Tensor:
    """uint8 -> [-1, 1] exactly as ToTensor() then Normalize(0.5, 0.5)."""
    return (torch.from_numpy(images).float() / 255.0 - 0.5) / 0.5


def load_cifar(cfg: DictConfig) -> Dataset:
    """The classes ``cfg.classes`` of CIFAR-10 (in file order), relabelled 0..k-1 by their position."""
    folder = _locate(cfg)
    official = _verify(folder, verify_checksums(cfg))
    classes = list(cfg.classes)
    splits = []
    train_files, test_files, _ = official_files()
    for names, is_test in ((train_files, False), (test_files, True)):
        images, labels = _read_batches(folder, names)
        keep = np.isin(labels, classes)
        position = np.full(labels.max() + 1, -1, dtype=np.int64)
        position[classes] = np.arange(len(classes))
        targets = position[labels[keep]]
        extras = {}
        if is_test:
            extras["lossless"] = torch.from_numpy(_lossless_mask(folder, len(labels), official)[keep])
        extras["source_index"] = torch.from_numpy(np.flatnonzero(keep))
        splits.append(Split(_to_unit_range(images[keep]), torch.from_numpy(targets), extras))
    return Dataset(splits[0], splits[1], source="cifar10")


def _lossless_mask(folder: Path, size: int, official: bool) -> np.ndarray:
    """Which test images are exact: all of an official copy; else as a mask file beside the folder says."""
    mask_file = folder.parent / LOSSLESS_MASK
    if mask_file.is_file():
        mask = np.load(mask_file).astype(bool)
        if mask.shape == (size,):
            return mask
    return np.full(size, official, dtype=bool)
