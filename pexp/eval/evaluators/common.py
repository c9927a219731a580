"""What every evaluator shares: its cache directory beside the run, the run it belongs to, seeded subsets."""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from pexp.data import Split
from pexp.runs import RunDir, config_hash, hashable

NOT_HASHED = ("batch_size", "progress")
RESULTS = "results.csv"


def eval_dir(run: RunDir, eval_cfg: DictConfig) -> RunDir:
    """``<run>/eval/<name>-<hash of the eval config>``."""
    tree = {k: v for k, v in hashable(eval_cfg).items() if k not in NOT_HASHED}
    return RunDir(run / "eval" / f"{eval_cfg.name}-{config_hash(tree)}")


def run_of(out: RunDir) -> RunDir:
    """The run an evaluation directory (:func:`eval_dir`) belongs to."""
    return RunDir(out.path.parent.parent)


def _subset_index(size: int, n: int | None, seed: int) -> tuple[torch.Tensor, bool]:
    """A seeded random choice of ``n`` of ``range(size)``, sorted (all when ``n`` is None or too large)."""
    if n is None or n >= size:
        return torch.arange(size), True
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n].sort().values, False


def _subset(split: Split, n: int | None, seed: int) -> tuple[Split, torch.Tensor]:
    index, _ = _subset_index(len(split), n, seed)
    return split.subset(index), index
