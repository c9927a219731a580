"""``python -m pexp.train experiment=<name> [overrides]``: train (or reuse) one run."""
import sys

import hydra
from omegaconf import DictConfig

from pexp import CONF_DIR
from pexp.config import check_output_dir, check_sweep, exit_on_user_error, validate_training
from pexp.train.loop import train


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    print(train(cfg).path)


if __name__ == "__main__":
    check_output_dir(sys.argv[1:])
    check_sweep(sys.argv[1:], validate_training)
    main()
