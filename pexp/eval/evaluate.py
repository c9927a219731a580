"""Run an evaluator on a finished training run; results are cached beside the run, keyed by the eval config."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from pexp.config import resolve_device, validate_margin_eval
from pexp.data import Split, load_dataset
from pexp.eval.margin import minimal_perturbation
from pexp.models import AsLogits
from pexp.runs import RunDir, config_hash, write_csv, write_json
from pexp.train.loop import decision_threshold, load_trained

NOT_HASHED = ("batch_size", "progress")


def eval_dir(run: RunDir, eval_cfg: DictConfig) -> RunDir:
    tree = {k: v for k, v in OmegaConf.to_container(eval_cfg, resolve=True).items() if k not in NOT_HASHED}
    return RunDir(run / "eval" / f"{eval_cfg.name}-{config_hash(tree)}")


def _subset(split: Split, n: int | None, seed: int) -> tuple[Split, torch.Tensor]:
    if n is None or n >= len(split):
        index = torch.arange(len(split))
    else:
        index = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return split.subset(index), index


def margin_results(run: RunDir, eval_cfg: DictConfig, device: str = "auto", progress: bool = True) -> pd.DataFrame:
    """Margins of a random train subset and of the test set: columns split, index, target, margin, lossless."""
    validate_margin_eval(OmegaConf.create({"eval": eval_cfg}))
    out = eval_dir(run, eval_cfg)
    if out.complete:
        return pd.read_csv(out / "margins.csv")
    with out.lock():
        if out.complete:
            return pd.read_csv(out / "margins.csv")
        model, cfg = load_trained(run, resolve_device(device))
        data = load_dataset(cfg.data)
        search = dict(norm=eval_cfg.norm, eps_max=eval_cfg.eps_max, resolution=eval_cfg.resolution,
                      steps=eval_cfg.steps, rel_stepsize=eval_cfg.rel_stepsize, random_start=eval_cfg.random_start,
                      batch_size=eval_cfg.batch_size, progress=progress)
        frames = []
        for name, split, n in (("train", data.train, eval_cfg.n_train), ("test", data.test, eval_cfg.n_test)):
            part = out / f"{name}.csv"  # each split is kept as soon as it is done, so an interruption loses less
            if not part.exists():
                subset, index = _subset(split, n, int(eval_cfg.seed))
                torch.manual_seed(int(eval_cfg.seed))
                started = time.perf_counter()
                margins = minimal_perturbation(AsLogits(model, decision_threshold(cfg.loss)), subset.x, subset.y, **search)
                seconds = time.perf_counter() - started
                lossless = subset.extras.get("lossless", torch.ones(len(subset), dtype=torch.bool))
                write_csv(part, pd.DataFrame(dict(split=name, index=index.numpy(), target=subset.y.numpy(),
                                                  margin=margins.numpy(), lossless=lossless.numpy())))
                print(f"[pexp] margins of {len(subset)} {name} points of {run.path}: median "
                      f"{float(margins.median()):.4f} ({seconds:.1f}s)")
            frames.append(pd.read_csv(part))
        results = pd.concat(frames, ignore_index=True)
        write_csv(out / "margins.csv", results)
        write_json(out / "eval.json", OmegaConf.to_container(eval_cfg, resolve=True))
        out.mark_complete()
        return results


EVALUATORS = {"margin": margin_results}


def evaluate(run: RunDir, eval_cfg: DictConfig, device: str = "auto", progress: bool = True) -> pd.DataFrame:
    from pexp.config import ConfigError

    if eval_cfg.name not in EVALUATORS:
        raise ConfigError(f"eval.name={eval_cfg.name!r} is not allowed: choose one of {', '.join(EVALUATORS)}")
    return EVALUATORS[eval_cfg.name](run, eval_cfg, device, progress)


def find_run(cfg: DictConfig) -> RunDir:
    """``run=<dir>``: that run; ``run=<experiment name>`` or ``experiment=...``: the run of that config
    (trained first when it is missing)."""
    from pexp.train.loop import train

    if cfg.run is not None and Path(str(cfg.run)).is_dir():
        return RunDir(cfg.run)
    return train(cfg)
