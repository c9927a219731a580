"""What every evaluator shares: its cache directory beside the run, the run it belongs to, seeded subsets
and the margin search settings of an eval config."""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from pexp.data import Split
from pexp.runs import RunDir, config_hash

NOT_HASHED = ("batch_size", "progress")
RESULTS = "results.csv"


def eval_dir(run: RunDir, eval_cfg: DictConfig) -> RunDir:
    """``<run>/eval/<name>-<hash of the eval config>``."""
    tree = {k: v for k, v in OmegaConf.to_container(eval_cfg, resolve=True).items() if k not in NOT_HASHED}
    return RunDir(run / "eval" / f"{eval_cfg.name}-{config_hash(tree)}")


def run_of(out: RunDir) -> RunDir:
    """The run an evaluation directory (:func:`eval_dir`) belongs to."""
    return RunDir(out.path.parent.parent)


def _search_settings(eval_cfg: DictConfig, progress: bool) -> dict:
    return dict(eps_max=eval_cfg.eps_max, resolution=eval_cfg.resolution, steps=eval_cfg.steps,
                rel_stepsize=eval_cfg.rel_stepsize, random_start=eval_cfg.random_start,
                batch_size=eval_cfg.batch_size, progress=progress)


def _subset(split: Split, n: int | None, seed: int) -> tuple[Split, torch.Tensor]:
    if n is None or n >= len(split):
        index = torch.arange(len(split))
    else:
        index = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return split.subset(index), index
