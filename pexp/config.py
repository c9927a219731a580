"""Start-up validation of a composed config, and the helpers every entry point shares.

Every bad value stops the program before any work, with one line naming the value and what is allowed (each entry
point composes and checks its jobs before Hydra starts: :func:`pexp.cli.preflight`).
"""
from __future__ import annotations

import errno
import functools
import os
import sys
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from omegaconf import DictConfig

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


def validate_eval(cfg: DictConfig) -> None:
    """Check the eval group: its schema's declared fields, then the rules the evaluators registered (eval.name is
    a registered evaluator's, the margin search's settings, each evaluator's own; pexp.eval.evaluators)."""
    check_groups(cfg, "eval")


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
