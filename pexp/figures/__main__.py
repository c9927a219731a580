"""``python -m pexp.figures fig=<id> [overrides]``: make the runs and evaluations a figure needs, then write
``<figures_dir>/<id>.{png,pdf,csv,claims.json}``. ``python -m pexp.figures --list`` lists the ids."""
from __future__ import annotations

import sys
from typing import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pexp import CONF_DIR
from pexp.cli import preflight
from pexp.config import ConfigError, check_output_dir, exit_on_user_error, validate_config


def check_job(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Before any work: ``fig`` is a figure id, and the config of every run the figure needs (its experiment, its
    evaluator, the command line's overrides) is allowed whole."""
    from pexp.figures import FIGURES
    from pexp.figures.base import figure_configs

    if cfg.fig not in FIGURES:
        raise ConfigError(f"fig={cfg.fig!r} is not allowed: choose one of {', '.join(FIGURES)}")
    for label, run_cfg in figure_configs(FIGURES[cfg.fig], overrides).items():
        try:
            validate_config(run_cfg)
        except ConfigError as error:
            raise ConfigError(f"{error} (in {cfg.fig}'s run {label})") from error


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from pexp.figures import FIGURES
    from pexp.figures.base import make_figure

    if cfg.fig not in FIGURES:
        raise ConfigError(f"fig={cfg.fig!r} is not allowed: choose one of {', '.join(FIGURES)}")
    paths = make_figure(FIGURES[cfg.fig], list(HydraConfig.get().overrides.task), cfg.paths.figures_dir,
                        cfg.device, progress=bool(cfg.train.progress))
    for path in paths.values():
        print(path)


def train_seeds(argv: list[str]) -> int:
    """``--train-seeds`` (make reproduce FIG=... SEEDS=...): train a seeded figure's runs for every seed as Hydra
    multiruns in parallel (one thread per job), before the figure draws them."""
    import os
    import subprocess

    from pexp.figures import FIGURES
    from pexp.figures.base import multirun_commands, requested_seeds

    jobs = next((int(item.split("=", 1)[1]) for item in argv if item.startswith("--jobs=")), os.cpu_count() or 1)
    overrides = [item for item in argv if not item.startswith("--")]
    figure_id = next((item.split("=", 1)[1] for item in overrides if item.startswith("fig=")), None)
    if figure_id not in FIGURES:
        raise ConfigError(f"fig={figure_id!r} is not allowed: choose one of {', '.join(FIGURES)}")
    seeds = requested_seeds(FIGURES[figure_id], overrides)
    if seeds is None:
        raise ConfigError("--train-seeds needs seeds=[...]")
    for command in multirun_commands(FIGURES[figure_id], seeds, overrides, jobs):
        print(f"[pexp] {' '.join(command[1:])}", flush=True)
        status = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
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
        from pexp.figures import FIGURES

        for figure in FIGURES.values():
            print(f"{figure.id:16s} paper {figure.paper}: {figure.what}")
        sys.exit(0)
    preflight(sys.argv[1:], check_job)
    check_output_dir(sys.argv[1:])
    main()
