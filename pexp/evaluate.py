"""``python -m pexp.evaluate eval=<name> run=<run dir | experiment name> [overrides]``."""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pexp import CONF_DIR
from pexp.config import check_output_dir, exit_on_user_error


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from pexp.eval.evaluate import RESULTS, eval_dir, evaluate, find_run
    from pexp.figures.compose import compose_experiment

    if cfg.run is not None and not Path(str(cfg.run)).is_dir():  # an experiment name: same overrides
        cfg = compose_experiment(str(cfg.run), list(HydraConfig.get().overrides.task))
    run = find_run(cfg)
    results = evaluate(run, cfg.eval, cfg.device, progress=True)
    print(f"{eval_dir(run, cfg.eval).path / RESULTS} ({len(results)} rows)")


if __name__ == "__main__":
    check_output_dir(sys.argv[1:])
    main()
