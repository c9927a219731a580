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
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from omegaconf import DictConfig, OmegaConf

from pexp.data import DATASETS
from pexp.errors import ConfigError, DataError  # noqa: F401 - defined at the bottom layer, named here for the rest
from pexp.models import MODELS
from pexp.overrides import Overrides


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=True)


def check_choice(cfg: DictConfig, key: str, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    value = _get(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed: choose one of {', '.join(map(str, allowed))}")


def check_bool(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not allowed: must be true or false")


def check_number(cfg: DictConfig, key: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False,
                 optional: bool = False) -> None:
    value = _get(cfg, key)
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high}")
        extra = " or null" if optional else ""
        raise ConfigError(f"{key}={value!r} is not allowed: must be {kind} {' and '.join(bounds)}{extra}".rstrip())


def validate_training(cfg: DictConfig) -> None:
    """Check the data, model, loss, perturb, init, optim and train groups of a training config."""
    check_choice(cfg, "data.name", sorted(DATASETS))
    check_number(cfg, "data.n_train", low=1, integer=True, optional=True)
    check_number(cfg, "data.n_test", low=1, integer=True, optional=True)
    check_choice(cfg, "model.name", sorted(MODELS))
    check_choice(cfg, "loss.name", ["mse", "ce", "logistic", "simplex"])
    check_number(cfg, "loss.output_divisor", low=0, low_open=True, optional=True)
    outputs = _get(cfg, "model.outputs")
    if cfg.loss.name == "simplex":  # PE section 7.1: m equidistant targets in R^(m-1), m - 1 outputs
        check_number(cfg, "loss.classes", low=2, integer=True)
        check_number(cfg, "loss.direction_rounds", low=0, integer=True)
        if outputs != cfg.loss.classes - 1:
            raise ConfigError(f"model.outputs={outputs!r} is not allowed with loss simplex and loss.classes="
                              f"{cfg.loss.classes}: must be loss.classes - 1 = {cfg.loss.classes - 1}")
    elif cfg.loss.name == "ce":  # cross-entropy: one logit per class, at least two
        if not (isinstance(outputs, int) and outputs >= 2):
            raise ConfigError(f"model.outputs={outputs!r} is not allowed with loss ce: must be an integer >= 2")
    elif outputs != 1:
        raise ConfigError(f"model.outputs={outputs!r} is not allowed with loss {cfg.loss.name}: must be 1")
    if cfg.model.name == "mlp":
        if not isinstance(cfg.model.get("batch_norm", False), bool):
            raise ConfigError(f"model.batch_norm={cfg.model.batch_norm!r} is not allowed: must be true or false")
        check_number(cfg, "model.dropout", low=0, high=1, high_open=True, optional=True)
    if not isinstance(cfg.train.get("keep_states", False), bool):
        raise ConfigError(f"train.keep_states={cfg.train.keep_states!r} is not allowed: must be true or false")
    check_choice(cfg, "perturb.layers", ["none", "all", "first"])
    check_number(cfg, "perturb.eps", low=0)
    check_number(cfg, "perturb.pieces", low=1, integer=True)
    check_number(cfg, "perturb.ramp_steps", low=1, integer=True)
    check_number(cfg, "init.factor", low=0, low_open=True)
    layers = _get(cfg, "init.layers")
    if not (layers == "all" or OmegaConf.is_list(layers) or isinstance(layers, list)):
        raise ConfigError(f"init.layers={layers!r} is not allowed: must be 'all' or a list of layer names")
    if _get(cfg, "init.scheme") is not None:
        check_choice(cfg, "init.scheme", ["default", "normal_fan_in"])
    check_number(cfg, "init.first_std", low=0, low_open=True, optional=True)
    if _get(cfg, "init.rng_order") is not None:
        check_choice(cfg, "init.rng_order", ["authors_pe_fig1"])
        check_choice(cfg, "init.network", ["ce", "se"])
    if OmegaConf.select(cfg, "data.rng_order") is not None:
        check_choice(cfg, "data.rng_order", ["authors", "pexp"])
    check_number(cfg, "optim.first_layer_penalty", low=0, optional=True)
    if _get(cfg, "optim.penalty_form") is not None:
        check_choice(cfg, "optim.penalty_form", ["norm", "norm_with_bias", "half_squared"])
    if _get(cfg, "optim.reduction") is not None:
        check_choice(cfg, "optim.reduction", ["mean", "sum"])
    check_choice(cfg, "optim.name", ["summed_momentum", "sgd"])
    check_number(cfg, "optim.lr", low=0, low_open=True)
    check_number(cfg, "optim.momentum", low=0, high=1, high_open=True)
    check_number(cfg, "optim.weight_decay", low=0)
    if _get(cfg, "optim.lr_milestones") is not None:  # the learning-rate schedule (pexp.train.optim.LrSchedule)
        check_list(cfg, "optim.lr_milestones", low=1, distinct=True)
    check_number(cfg, "optim.lr_milestone_factor", low=0, low_open=True, optional=True)
    check_number(cfg, "optim.lr_step_every", low=1, integer=True, optional=True)
    check_number(cfg, "optim.lr_step_factor", low=0, low_open=True, optional=True)
    check_number(cfg, "train.epochs", low=1, integer=True)
    check_number(cfg, "train.batch_size", low=1, integer=True, optional=True)
    check_number(cfg, "train.log_every", low=1, integer=True, optional=True)
    check_number(cfg, "train.target_margin", low=0, low_open=True, optional=True)
    check_number(cfg, "train.target_accuracy", low=0, low_open=True, high=1, optional=True)
    if _get(cfg, "train.target_split") is not None:
        check_choice(cfg, "train.target_split", ["train", "test"])
    check_number(cfg, "train.target_check_every", low=1, integer=True, optional=True)
    check_number(cfg, "train.target_check_first", low=1, integer=True, optional=True)
    check_number(cfg, "train.checkpoint_every", low=1, integer=True, optional=True)
    log_every, checkpoint_every = cfg.train.get("log_every") or 1, cfg.train.get("checkpoint_every") or 1
    if checkpoint_every % log_every:
        raise ConfigError(f"train.checkpoint_every={checkpoint_every} is not allowed: must be a multiple of "
                          f"train.log_every={log_every}")
    check_number(cfg, "seed", low=0, integer=True)
    if cfg.perturb.layers == "none" and cfg.perturb.eps > 0:
        raise ConfigError(f"perturb.eps={cfg.perturb.eps!r} is not allowed with perturb.layers=none (nothing would be "
                          f"perturbed): use perturb=all_layers or perturb=first_layer, or perturb.eps=0")
    _validate_model_and_data(cfg)
    check_choice(cfg, "device", ["auto", "cpu", "cuda"])
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is not allowed here: no CUDA device is available (use auto or cpu)")


def check_list(cfg: DictConfig, key: str, *, low: int, length: int | None = None, distinct: bool = False,
               high: int | None = None) -> None:
    """A list of integers >= ``low`` (and <= ``high``), of ``length`` items when given, distinct if asked."""
    value = _get(cfg, key)
    items = list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else None
    ok = items is not None and len(items) > 0 and all(
        isinstance(item, int) and not isinstance(item, bool) and item >= low and (high is None or item <= high)
        for item in items)
    ok = ok and (length is None or len(items) == length) and (not distinct or len(set(items)) == len(items))
    if not ok:
        what = f"a list of {length} " if length else "a non-empty list of "
        what += f"{'distinct ' if distinct else ''}integers >= {low}" + (f" and <= {high}" if high is not None else "")
        shown = items if items is not None else value
        raise ConfigError(f"{key}={shown!r} is not allowed: must be {what}")


def layer_names(model: DictConfig) -> list[str] | None:
    """The affine layers' names of the model a config builds (None for a model this check does not know)."""
    if model.name in ("pe_net", "richness_cnn"):
        return ["conv1", "conv2", "fc1", "fc2", "fc3"]
    if model.name == "mlp":
        return [f"fc{i + 1}" for i in range(len(model.widths) + 1)]
    if model.name == "linear":
        return ["fc1"]
    return None


def _validate_model_and_data(cfg: DictConfig) -> None:
    """The model's and the data set's own numbers, and init.layers against the model's layer names."""
    model = cfg.model
    if "size" in model:
        check_number(cfg, "model.size", low=1, integer=True)
    if "widths" in model:
        check_list(cfg, "model.widths", low=1, length=4 if model.name == "richness_cnn" else None)
    if "negative_slope" in model:
        check_number(cfg, "model.negative_slope", low=0)
    if "hidden_bias_scale" in model:
        check_number(cfg, "model.hidden_bias_scale")
    names = layer_names(model)
    layers = _get(cfg, "init.layers")
    if names is not None and layers != "all":
        for name in layers:
            if name != "first" and name not in names:
                raise ConfigError(f"init.layers entry {name!r} is not allowed for model {model.name}: choose from "
                                  f"all, first, {', '.join(names)}")
    if cfg.data.name in ("cifar2", "cifar10"):
        check_list(cfg, "data.classes", low=0, high=9, length=2 if cfg.data.name == "cifar2" else None,
                   distinct=True)
    if cfg.data.name.startswith("synthetic_"):
        check_number(cfg, "data.rank", low=1, high=3 * 32 * 32, integer=True)
        for key in ("class_std", "spread", "noise"):
            check_number(cfg, f"data.{key}", low=0)
        check_number(cfg, "data.separation")


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
    """The margin search's own settings (pexp.eval.margin), where the eval config sets them."""
    from pexp.eval.margin import OBJECTIVES, SEARCHES

    if cfg.eval.get("objective") is not None:
        check_choice(cfg, "eval.objective", OBJECTIVES)
    if cfg.eval.get("search") is not None:
        check_choice(cfg, "eval.search", SEARCHES)
        if cfg.eval.search == "walk":
            check_number(cfg, "eval.walk_step", low=0, low_open=True)
    if cfg.eval.get("restarts") is not None:
        check_number(cfg, "eval.restarts", low=0, integer=True)
    if cfg.eval.get("first_estimate") is not None:
        check_choice(cfg, "eval.first_estimate", ["fmn"])
        check_number(cfg, "eval.fmn_steps", low=1, integer=True)
    if "apgd" in cfg.eval:
        check_bool(cfg, "eval.apgd")
    for key in ("apgd_steps", "apgd_restarts"):
        if key in cfg.eval:
            check_number(cfg, f"eval.{key}", low=1, integer=True)
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
    for key in ("random_start", "reproject"):
        if key in cfg.eval:
            check_bool(cfg, f"eval.{key}")
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
    check_number(cfg, "eval.eps_max", low=0, low_open=True)
    check_number(cfg, "eval.resolution", low=0, low_open=True, high=float(cfg.eval.eps_max))
    check_number(cfg, "eval.steps", low=1, integer=True)
    check_number(cfg, "eval.rel_stepsize", low=0, low_open=True)
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
        check_choice(cfg, "eval.norm", ["linf", "l2"])
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
