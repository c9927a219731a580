"""Compose the config of an experiment (a training run a figure needs) with the user's command-line overrides."""
from __future__ import annotations

import copy
import functools
from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from pexp import CONF_DIR

# Overrides that select what to make, not how: they are not passed on to the runs a figure needs.
_STEP_KEYS = ("experiment", "run", "fig", "seeds")


def run_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides of a command line that apply to the runs behind it (drops experiment/run/fig/hydra ones)."""
    kept = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in _STEP_KEYS or key.startswith("hydra"):
            continue
        kept.append(override)
    return kept


# synthetic=true: each real data set is replaced by its offline stand-in (figures made from it say so).
STAND_INS = {"cifar2": "synthetic_cifar2", "cifar10": "synthetic_cifar10", "mnist": "synthetic_mnist",
             "mnist_pca32": "synthetic_mnist_pca32"}


def _compose(arguments: list[str]) -> DictConfig:
    """A fresh copy each time: a figure's configs are composed once to be checked before any work, and again to
    be made."""
    return copy.deepcopy(_composed(tuple(arguments)))


@functools.lru_cache(maxsize=256)
def _composed(arguments: tuple[str, ...]) -> DictConfig:
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=list(arguments))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(arguments))


def compose_experiment(experiment: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The full config of ``experiment=<name>`` plus ``overrides`` (run-level ones only); with ``synthetic=true``
    its real data set is swapped for the synthetic stand-in."""
    arguments = [f"experiment={experiment}", *run_overrides(overrides)]
    cfg = _compose(arguments)
    if cfg.get("synthetic") and cfg.data.name in STAND_INS:
        cfg = _compose([*arguments, f"data={STAND_INS[cfg.data.name]}"])
    return cfg
