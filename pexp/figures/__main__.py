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


if __name__ == "__main__":
    if "--list" in sys.argv[1:]:
        from pexp.figures import FIGURES

        for figure in FIGURES.values():
            print(f"{figure.id:16s} paper {figure.paper}: {figure.what}")
        sys.exit(0)
    preflight(sys.argv[1:], check_job)
    check_output_dir(sys.argv[1:])
    main()
