"""pexp: reproduce the figures of four papers on why neural networks lack robustness."""
import warnings
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# conf/hydra/launcher/submitit_{local,slurm}.yaml set this project's defaults over the submitit plugin's schemas of
# the same names; Hydra checks them against those schemas (as wanted) and would say so at every start of a job.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/submitit_\w+' is validated against ConfigStore schema",
                        category=UserWarning)

# Each config group's schema registers itself in Hydra's ConfigStore beside the code it configures (pexp.schema):
# importing the training loop imports the training groups', the evaluators the eval group's (each evaluator's schema
# and rules), before anything composes or checks a config.
from pexp import train  # noqa: E402,F401
from pexp.eval import evaluators  # noqa: E402,F401
