"""Start-up validation of a composed config, and the helpers every entry point shares.

Every bad value stops the program before any work, with one line naming the value and what is allowed (each entry
point composes and checks its jobs before Hydra starts: :func:`pexp.cli.preflight`).
"""
from __future__ import annotations

import errno
import functools
import numbers
import os
import sys
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from pexp.checks import check_bool, check_choice, check_number, get_required as _get
from pexp.errors import ConfigError, DataError  # noqa: F401 - defined at the bottom layer, named here for the rest
from pexp.losses import validate_loss
from pexp.models import layer_names  # noqa: F401 - the check of init.layers reads the models' names from it
from pexp.schema import UNSET, check_groups, cross_check, flag, integer, store
from pexp.overrides import Overrides


class Device(StrEnum):
    auto = "auto"  # CUDA when present
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class RootConfig:
    """The root config's own keys (conf/config.yaml); the groups have their own schemas beside their code."""

    run_name: str = "default"
    seed: int = integer(1, ge=0)
    device: Device = Device.auto
    run: Optional[str] = None
    fig: Optional[str] = None
    seeds: Any = None
    synthetic: Any = flag(False)
    crosscheck: Any = flag(False)  # evaluate, eval=margin: also check the margins with another library's attacks
    sweep: Any = UNSET  # offmanifold-fig4: the factors and seeds `make sweep-init` trains


store(RootConfig, "config")


@cross_check("")
def check_device(cfg: DictConfig) -> None:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is not allowed here: no CUDA device is available (use auto or cpu)")


def validate_training(cfg: DictConfig) -> None:
    """Check the root keys and the data, model, loss, perturb, init, optim and train groups of a training config:
    their schemas' declared fields, then the rules their code registered, then the loss against the model."""
    check_groups(cfg, "", "data", "model", "perturb", "init", "optim", "train")
    validate_loss(cfg)  # the loss owns its rule (pexp.losses)


EVALUATORS = ("margin", "boundary", "pca", "offmanifold", "projected", "dataset_pca", "active", "tangent", "bound")
PROJECTION_MODES = ("unrestricted", "subspace", "complement")


def _validate_ts_eval(cfg: DictConfig) -> None:
    """The paper TS evaluators: active counts, per-epoch estimators, and the bound of eq. (2)."""
    if cfg.eval.name == "bound":
        for key in ("d_in", "outputs", "width"):
            check_number(cfg, f"eval.{key}", low=1, integer=True)
        for key in ("sigma", "w_max", "mu_fraction", "sigma_fraction"):
            check_number(cfg, f"eval.{key}", low=0, low_open=True)
        check_number(cfg, "eval.mu", low=0)
        for key, low, integer in (("depths", 1, True), ("mus", 0, False), ("sigmas", 0, False),
                                  ("w_maxes", 0, False), ("widths", 1, True)):
            values = list(_get(cfg, f"eval.{key}"))
            bad = [v for v in values if not isinstance(v, numbers.Real) or isinstance(v, bool) or v < low
                   or (v == 0 and key in ("sigmas", "w_maxes")) or (integer and not float(v).is_integer())]
            if not values or bad:
                raise ConfigError(f"eval.{key}={values} is not allowed: must be a non-empty list of "
                                  f"{'integers' if integer else 'numbers'} >{'=' if key in ('mus',) or integer else ''} {low}")
        return
    check_number(cfg, "eval.batch_size", low=1, integer=True)
    check_number(cfg, "eval.n_train", low=2, integer=True, optional=True)
    check_number(cfg, "eval.n_test", low=2, integer=True, optional=True)
    if cfg.eval.name == "tangent":
        check_number(cfg, "eval.depth", low=2, integer=True, optional=True)


def _validate_search(cfg: DictConfig) -> None:
    """The margin search's own settings, where the eval config sets them: checked by the search's settings
    (pexp.eval.margin.SearchSettings), and the protocol label the results carry."""
    from pexp.eval.margin import SearchSettings

    SearchSettings.from_config(cfg.eval)
    if cfg.eval.get("protocol") is not None:
        check_choice(cfg, "eval.protocol", ["accurate", "authors"])


def validate_eval(cfg: DictConfig) -> None:
    """Check the eval group: the margin search settings of the evaluators that search, then each one's own."""
    check_choice(cfg, "eval.name", EVALUATORS)
    if cfg.eval.name in ("active", "tangent", "bound"):
        _validate_ts_eval(cfg)
        return
    check_number(cfg, "eval.batch_size", low=1, integer=True)
    if "seed" in cfg.eval:
        check_number(cfg, "eval.seed", low=0, integer=True)
    if cfg.eval.name == "pca":
        check_number(cfg, "eval.n_train", low=2, integer=True, optional=True)
        return
    if cfg.eval.name == "dataset_pca":
        check_choice(cfg, "eval.split", ["train", "test"])
        return
    if cfg.eval.name == "offmanifold":
        check_number(cfg, "eval.max_distance", low=0, low_open=True)
        check_number(cfg, "eval.tolerance", low=0, low_open=True)
        check_number(cfg, "eval.grid", low=2, integer=True)
        check_number(cfg, "eval.surface_grid", low=2, integer=True, optional=True)
        return
    _validate_search(cfg)
    if cfg.eval.name == "projected":
        check_number(cfg, "eval.n_points", low=1, integer=True)
        if _get(cfg, "eval.split") is not None:
            check_choice(cfg, "eval.split", ["train", "test"])
        bounds = _get(cfg, "eval.bounds")
        if bounds is not None and not (OmegaConf.is_list(bounds) and len(bounds) == 2 and all(isinstance(b, numbers.Real) for b in bounds)
                                       and bounds[0] < bounds[1]):
            raise ConfigError(f"eval.bounds={list(bounds) if OmegaConf.is_list(bounds) else bounds!r} is not "
                              f"allowed: must be null (no box) or [low, high] with low < high")
        modes = list(_get(cfg, "eval.modes"))
        if not modes or any(mode not in PROJECTION_MODES for mode in modes):
            raise ConfigError(f"eval.modes={modes} is not allowed: must be a non-empty list of "
                              f"{', '.join(PROJECTION_MODES)}")
    if cfg.eval.name == "margin":
        check_number(cfg, "eval.n_train", low=1, integer=True, optional=True)
        check_number(cfg, "eval.n_test", low=1, integer=True, optional=True)
    if cfg.eval.name == "boundary":
        check_number(cfg, "eval.grid", low=2, integer=True)
        view = list(_get(cfg, "eval.view"))
        if len(view) != 4 or not (view[0] < view[1] and view[2] < view[3]):
            raise ConfigError(f"eval.view={view} is not allowed: must be [x_min, x_max, y_min, y_max] with "
                              f"x_min < x_max and y_min < y_max")


def validate_config(cfg: DictConfig) -> None:
    """The whole config of a job: its training groups and its eval group."""
    validate_training(cfg)
    validate_eval(cfg)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# OS errors that mean "this output cannot be written here", reported as one line like a bad config value.
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}


def check_output_dir(arguments: list[str]) -> None:
    """Before Hydra starts (it writes its logs there): the output folder of a command line (its last
    ``paths.output_dir`` override, each folder of a multirun's sweep over it, else $PEXP_OUTPUT, else ./outputs)
    must be a writable folder; else one line on stderr and exit status 2."""
    given = Overrides.readable(arguments).last("paths.output_dir")
    folders = [os.environ.get("PEXP_OUTPUT") or "outputs"] if given is None or given.is_delete() else \
        list(given.sweep_string_iterator()) if given.is_discrete_sweep() else [str(given.value())]
    for folder in folders:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            print(f"error: paths.output_dir={folder} is not a writable folder: {error.strerror or error}",
                  file=sys.stderr)
            sys.exit(2)


def exit_on_user_error(main: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a ConfigError / DataError, a training loss that became NaN or infinite (FloatingPointError, naming the
    epoch), or an output that cannot be written (disk full, not writable), into one clear line on stderr and exit
    status 2 (atomic writes leave every existing file as it was)."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except (ConfigError, DataError, FloatingPointError) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except OSError as error:
            if error.errno not in WRITE_ERRORS:
                raise
            print(f"error: cannot write {error.filename}: {error.strerror} (existing results are intact; "
                  f"free space or choose another paths.output_dir)", file=sys.stderr)
            sys.exit(2)

    return wrapper
