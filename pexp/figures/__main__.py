"""``python -m pexp.figures fig=<id> [overrides]``: make the runs and evaluations a figure needs, then write
``<figures_dir>/<id>.{png,pdf,csv,claims.json}``. ``python -m pexp.figures --list`` lists the ids."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pexp import CONF_DIR
from pexp.cli import preflight
from pexp.config import check_output_dir, exit_on_user_error, validate_config
from pexp.errors import ConfigError
from pexp.figures import FIGURES
from pexp.figures.base import figure_configs, make_figure, multirun_commands, requested_seeds
from pexp.figures.compose import figure_command


def check_job(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Before any work: ``fig`` is a figure id, and the config of every run the figure needs (its experiment, its
    evaluator, the command line's overrides) is allowed whole."""
    if cfg.fig not in FIGURES:
        raise ConfigError(f"fig={cfg.fig!r} is not allowed: choose one of {', '.join(FIGURES)}")
    for label, run_cfg in figure_configs(FIGURES[cfg.fig], figure_command(overrides, cfg)).items():
        try:
            validate_config(run_cfg)
        except ConfigError as error:
            raise ConfigError(f"{error} (in {cfg.fig}'s run {label})") from error


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    if cfg.fig not in FIGURES:
        raise ConfigError(f"fig={cfg.fig!r} is not allowed: choose one of {', '.join(FIGURES)}")
    paths = make_figure(FIGURES[cfg.fig], figure_command(HydraConfig.get().overrides.task, cfg),
                        cfg.paths.figures_dir, cfg.device, progress=bool(cfg.train.progress))
    for path in paths.values():
        print(path)


def train_seeds(argv: list[str]) -> int:
    """``--train-seeds`` (make reproduce FIG=... SEEDS=...): train a seeded figure's runs for every seed as Hydra
    multiruns in parallel (one thread per job), before the figure draws them; the command line is checked whole
    first, as the figure's own."""
    flags = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    flags.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    try:
        known, rest = flags.parse_known_args(argv)
    except argparse.ArgumentError as error:
        raise ConfigError(str(error)) from None
    overrides = [item for item in rest if not item.startswith("--")]
    preflight(overrides, check_job)
    command = figure_command(overrides)
    figure = FIGURES[command.cfg.fig]
    seeds = requested_seeds(figure, command)
    if seeds is None:
        raise ConfigError("--train-seeds needs seeds=[...]")
    for multirun in multirun_commands(figure, seeds, command, known.jobs):
        print(f"[pexp] {' '.join(multirun[1:])}", flush=True)
        status = subprocess.run(multirun, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
        if status:
            return status
    return 0


if __name__ == "__main__":
    if "--train-seeds" in sys.argv[1:]:
        try:
            sys.exit(train_seeds(sys.argv[1:]))
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
    if "--list" in sys.argv[1:]:
        for figure in FIGURES.values():
            print(f"{figure.id:16s} paper {figure.paper}: {figure.what}")
        sys.exit(0)
    preflight(sys.argv[1:], check_job)
    check_output_dir(sys.argv[1:])
    main()
