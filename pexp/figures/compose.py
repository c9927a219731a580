"""A figure's command line, read once: the root config it composes (``fig``, ``seeds``, ``paths`` ...) and its
overrides, parsed; and the config of each experiment (a training run a figure needs) with those overrides."""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Iterable

from hydra import compose
from hydra.errors import HydraException
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig

from pexp import CONF_DIR
from pexp.cli import compose_config, hydra_error_line
from pexp.errors import ConfigError
from pexp.overrides import Overrides

# Overrides that select what to make, not how: they are not passed on to the runs a figure needs.
_STEP_KEYS = ("experiment", "run", "fig", "seeds")


def run_overrides(overrides: Iterable[str | Override]) -> Overrides:
    """The overrides of a command line that apply to the runs behind it (drops experiment/run/fig/seeds and
    hydra ones)."""
    return Overrides(overrides).without(*_STEP_KEYS, under=("hydra",))


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
        try:
            return compose(config_name="config", overrides=list(arguments))
        except HydraException as error:  # a value its schema does not allow: the one line the entry points print
            raise ConfigError(hydra_error_line(error, arguments)) from error
    return compose_config(list(arguments))


def compose_experiment(experiment: str, overrides: Iterable[str | Override] = ()) -> DictConfig:
    """The full config of ``experiment=<name>`` plus ``overrides`` (run-level ones only); with ``synthetic=true``
    its real data set is swapped for the synthetic stand-in."""
    arguments = [f"experiment={experiment}", *run_overrides(overrides).strings()]
    cfg = _compose(arguments)
    if cfg.get("synthetic") and cfg.data.name in STAND_INS:
        cfg = _compose([*arguments, f"data={STAND_INS[cfg.data.name]}"])
    return cfg


@dataclass(frozen=True)
class FigureCommand:
    """``python -m pexp.figures`` 's command line, read once (:func:`figure_command`): its overrides parsed, and
    the root config they compose, where ``fig``, ``seeds`` and ``paths`` are read."""

    overrides: Overrides
    given: DictConfig | None = field(default=None, repr=False)  # the root config, when Hydra composed it already

    @functools.cached_property
    def cfg(self) -> DictConfig:
        """The root config; composed here from the root keys, group choices and ``paths`` only: the other dotted
        keys belong to the runs' configs (``model.widths`` of an mlp run), which the root's defaults may lack."""
        if self.given is not None:
            return self.given
        own = Overrides(item for item in self.overrides
                        if "." not in item.key_or_group or item.key_or_group.startswith("paths."))
        return _compose(own.strings())

    @property
    def runs(self) -> Overrides:
        """The overrides that reach every run the figure needs."""
        return run_overrides(self.overrides)


def figure_command(command: FigureCommand | Iterable[str | Override], cfg: DictConfig | None = None) -> FigureCommand:
    """A figure's command line (override strings, or parsed) read once; ``cfg``: the root config it composes,
    when at hand (else composed when first asked for)."""
    if isinstance(command, FigureCommand):
        return command
    return FigureCommand(Overrides(command), cfg)
