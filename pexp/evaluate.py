"""``python -m pexp.evaluate eval=<name> run=<run dir | experiment name> [overrides]``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pexp import CONF_DIR
from pexp.cli import group_options, preflight
from pexp.config import check_output_dir, exit_on_user_error, validate_config
from pexp.errors import ConfigError
from pexp.eval.crosscheck import CROSSCHECK, crosscheck_margins
from pexp.eval.evaluate import RESULTS, eval_dir, evaluate, find_run
from pexp.eval.evaluators import EVALUATORS
from pexp.figures.compose import compose_experiment
from pexp.runs import COMPLETE


def job_config(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The config an evaluation uses: with ``run=<experiment name>``, that experiment with the same overrides;
    else (``run=<run dir>``, or no run: ``experiment=...``) the composed config itself."""
    if cfg.run is not None and not Path(str(cfg.run)).is_dir():
        return compose_experiment(str(cfg.run), list(overrides))
    return cfg


def check_job(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Before any work: ``run`` names a finished run's directory or an experiment, ``eval`` an evaluator of a
    trained model, and the whole config (the run's training part, the eval part) is allowed."""
    run = None if cfg.run is None else str(cfg.run)
    if run is not None and Path(run).is_dir():
        if not (Path(run) / COMPLETE).exists():
            raise ConfigError(f"run={run} is not a finished training run (no {Path(run) / COMPLETE}): "
                              f"python -m pexp.runs shows the runs and their status")
    elif run is not None and run not in group_options("experiment"):
        if "/" in run or run.startswith((".", "~")):
            raise ConfigError(f"run={run} does not exist: give a finished run's directory (python -m pexp.runs "
                              f"lists them) or an experiment name")
        raise ConfigError(f"run={run!r} is not allowed: no run directory nor experiment has that name; "
                          f"experiments: {', '.join(group_options('experiment'))}")
    cfg = job_config(cfg, overrides)
    if cfg.eval.name not in EVALUATORS:
        raise ConfigError(f"eval={cfg.eval.name} is not allowed here: pexp.evaluate runs an evaluator of a trained "
                          f"model, choose one of {', '.join(EVALUATORS)} ({cfg.eval.name} is a figure's: "
                          f"python -m pexp.figures --list)")
    validate_config(cfg)
    if cfg.crosscheck and cfg.eval.name != "margin":
        raise ConfigError(f"crosscheck=true is not allowed with eval={cfg.eval.name}: it checks margins, give "
                          f"eval=margin (or a margin eval option)")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    cfg = job_config(cfg, list(HydraConfig.get().overrides.task))
    run = find_run(cfg)
    results = evaluate(run, cfg.eval, cfg.device, progress=True)
    print(f"{eval_dir(run, cfg.eval).path / RESULTS} ({len(results)} rows)")
    if cfg.crosscheck:
        print(crosscheck_margins(run, cfg.eval, cfg.device).to_string(index=False))
        print(eval_dir(run, cfg.eval).path / CROSSCHECK)


if __name__ == "__main__":
    preflight(sys.argv[1:], check_job)
    check_output_dir(sys.argv[1:])
    main()
