"""What every entry point (``pexp.train``, ``pexp.evaluate``, ``pexp.figures``) does before Hydra starts.

:func:`preflight` composes the config of each job the command line asks for (one, or every job of a ``-m``
multirun), lets the entry point check it whole, and turns whatever is wrong (a Hydra composition error: an unknown
group option, an unknown experiment, a key the config lacks, an unreadable override; or a value pexp does not
allow) into one line on stderr and exit status 2, before any training, evaluation or output.
"""
from __future__ import annotations

import importlib.util
import itertools
import re
import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from pexp import CONF_DIR
from pexp.errors import ConfigError, DataError
from pexp.overrides import Overrides
from pexp.schema import SCHEMA_PREFIX, schema_error_line

# A job's check: its composed config (no hydra node) and its overrides (no hydra ones); raises ConfigError.
Check = Callable[[DictConfig, Sequence[str]], None]

MULTIRUN = ("-m", "--multirun")
SUBMITIT = "hydra_plugins.hydra_submitit_launcher"


def _is_hydra(override: str) -> bool:
    return override.lstrip("+~").startswith("hydra")


def group_options(group: str) -> list[str]:
    """The options of a config group under conf/ (e.g. ``model`` -> linear, mlp, ...)."""
    return sorted(path.stem for path in (Path(CONF_DIR) / group).glob("*.yaml"))


def _missing_option(error: Exception, job: Sequence[str]) -> str:
    """``model=resnet is not allowed: choose one of linear, mlp, ...`` from Hydra's MissingConfigException."""
    path = str(error.missing_cfg_file)
    group, _, value = path.partition("/")
    for override in Overrides.readable(job):
        key = override.key_or_group
        if path.startswith(key + "/"):
            group, value = key, path[len(key) + 1:]
            break
    options = [option for option in getattr(error, "options", None) or group_options(group)
               if not option.startswith(SCHEMA_PREFIX)]
    if not options:
        return f"{group}={value} is not allowed: no such config ({path}.yaml)"
    return f"{group}={value} is not allowed: choose one of {', '.join(options)}"


def _missing_key(cause: OmegaConfBaseException, job: Sequence[str]) -> str:
    """``eval.grid=3 is not allowed: eval (margin) has no key 'grid' (its keys: ...)`` from Hydra's
    'Could not override' error."""
    full_key = str(cause.full_key)
    given = [(item.key_or_group, str(item.input_line)) for item in Overrides.readable(job)]
    override = next((line for key, line in given if key == full_key), None) or next(
        (line for key, line in given if key.startswith(full_key + ".")), full_key)
    parent = full_key.rpartition(".")[0]
    node = getattr(cause, "parent_node", None)
    keys = [str(key) for key in node.keys() if key != "hydra"] if isinstance(node, DictConfig) else []
    where = "the config"
    if parent:
        name = node.get("name") if isinstance(node, DictConfig) and "name" in node else None
        where = f"{parent} ({name})" if isinstance(name, str) and "." not in parent else parent
    known = f"its keys: {', '.join(keys)}; " if keys else ""
    return f"{override} is not allowed: {where} has no key {cause.key!r} ({known}++{override.lstrip('+~')} adds it)"


def _flatten(text: str) -> str:
    """Hydra's multi-line message on one line (without its search path and its link to the grammar docs)."""
    text = text.split("Config search path:")[0]
    lines = [line.strip() for line in text.splitlines()]
    return " ".join(line for line in lines if line and not line.startswith(("See https://", "full_key:",
                                                                          "object_type=")))


# Hydra's message when an option (an experiment) sets a key the schema of another group's chosen option lacks.
FOREIGN_KEY = re.compile(r"In '(?P<group>[\w/]+)/(?P<option>\w+)': ConfigKeyError raised while composing config:\s*"
                         r"Key '(?P<key>\w+)' not in '(?P<schema>\w+)'\s*full_key: (?P<full_key>[\w.]+)")


def _foreign_key(match: re.Match, job: Sequence[str]) -> str:
    """``experiment=om_fig3_a is not allowed with eval=margin: ...`` for a key one option sets in another group."""
    target = match["full_key"].split(".")[0]
    chosen = Overrides.readable(job).last(target)
    chosen = str(chosen.input_line) if chosen is not None else f"the default {target} option"
    return (f"{match['group']}={match['option']} is not allowed with {chosen}: "
            f"it sets {match['full_key']}, which that option's schema ({match['schema']}) does not have; choose the "
            f"{match['group']}'s own {target} option or another {match['group']}")


def hydra_error_line(error: Exception, job: Sequence[str]) -> str:
    """One line naming the value and what is allowed, for an error Hydra raises while composing ``job``."""
    cause = error.__cause__
    foreign = FOREIGN_KEY.search(str(error))
    if foreign:
        return _foreign_key(foreign, job)
    if isinstance(error, MissingConfigException) and getattr(error, "missing_cfg_file", None):
        return _missing_option(error, job)
    if isinstance(error, OverrideParseException):
        return f"the override {error.override!r} cannot be read: {_flatten(error.message)}"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and getattr(cause, "full_key", None):
        return _missing_key(cause, job)
    if isinstance(cause, ValidationError) and schema_error_line(cause):
        return schema_error_line(cause)  # a typed field given a value of another type, an Enum a name it lacks
    line = _flatten(str(error))
    if isinstance(cause, Exception) and _flatten(str(cause)) not in line:
        line += f" ({_flatten(str(cause))})"
    return line


def compose_config(overrides: Sequence[str], hydra: bool = False) -> DictConfig:
    """The composed config of ``overrides`` (with the hydra node if asked); what Hydra cannot compose raises a
    ConfigError with the line :func:`preflight` prints."""
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)
    except HydraException as error:
        raise ConfigError(hydra_error_line(error, overrides)) from error


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _check_launcher(cfg: DictConfig) -> None:
    """The submitit launchers need the optional extra (``pip install -e '.[slurm]'``)."""
    target = str(OmegaConf.select(cfg, "hydra.launcher._target_", default="") or "")
    if target.startswith(SUBMITIT) and not installed(SUBMITIT):
        choice = OmegaConf.select(cfg, "hydra.runtime.choices", default={}).get("hydra/launcher", "submitit_slurm")
        raise ConfigError(f"hydra/launcher={choice} needs hydra-submitit-launcher, not installed here: "
                          f"pip install -e '.[slurm]' (or make test SLURM=1)")
    if target.endswith(".SlurmLauncher") and shutil.which("sbatch") is None:
        raise ConfigError("hydra/launcher=submitit_slurm needs SLURM's sbatch, not found here: run the command on "
                          "the cluster's login node (or hydra/launcher=submitit_local to run the jobs here)")


def _jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The jobs of a command line: itself, or each job of a ``-m`` sweep (the cartesian product of its comma
    lists, in Hydra's basic sweeper's order)."""
    if not multirun:
        return [overrides]
    choices = [[f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] if o.is_sweep_override()
               else [f"{o.get_key_element()}={o.get_value_element_as_str()}"]
               for o in OverridesParser.create().parse_overrides(overrides)]
    return [list(job) for job in itertools.product(*choices)]


def preflight(arguments: Sequence[str], check: Check) -> None:
    """Before Hydra starts: compose every job of the command line (``-m``: each job of the sweep) and ``check``
    it; any error becomes one line on stderr (naming the job of a sweep) and exit status 2. Command lines with
    Hydra's own flags (``--help``, ``--cfg``, ``--config-name`` ...) are left to Hydra."""
    arguments = list(arguments)
    flags = [item for item in arguments if item.startswith("-")]
    if any(flag not in (*MULTIRUN, "-r", "--run") for flag in flags):
        return
    multirun = any(flag in MULTIRUN for flag in flags)
    overrides = [item for item in arguments if not item.startswith("-")]
    job: list[str] | None = None  # the sweep job being checked, named in the line of a multirun
    try:
        for job in _jobs(overrides, multirun):
            cfg = compose_config(job, hydra=True)
            _check_launcher(cfg)
            with open_dict(cfg):
                cfg.pop("hydra")
            check(cfg, [item for item in job if not _is_hydra(item)])
    except (ConfigError, DataError) as error:
        _fail(str(error), job if multirun else None)
    except HydraException as error:  # a sweep that cannot be read
        _fail(hydra_error_line(error, overrides))
    except OmegaConfBaseException as error:  # a value read while checking (e.g. an interpolation into a typed key)
        _fail(schema_error_line(error) or _flatten(str(error)), job if multirun else None)
    except Exception:  # noqa: BLE001 - anything else is left to Hydra to report
        return


def _fail(line: str, job: Sequence[str] | None = None) -> None:
    print(f"error: {line}" + (f" (sweep job: {' '.join(job)})" if job else ""), file=sys.stderr)
    sys.exit(2)
