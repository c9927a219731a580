"""``python -m pexp.train experiment=<name> [overrides]``: train (or reuse) one run."""
import sys
from typing import Sequence

import hydra
from omegaconf import DictConfig

from pexp import CONF_DIR
from pexp.cli import preflight
from pexp.config import check_output_dir, exit_on_user_error, validate_config
from pexp.train.loop import train


def check_job(cfg: DictConfig, overrides: Sequence[str]) -> None:  # noqa: ARG001 - the config says it all
    """Before any work: the whole config, its training groups and its eval group."""
    validate_config(cfg)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    print(train(cfg).path)


if __name__ == "__main__":
    preflight(sys.argv[1:], check_job)
    check_output_dir(sys.argv[1:])
    main()
