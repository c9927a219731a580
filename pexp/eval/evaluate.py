"""Run an evaluator on a finished training run; results are cached beside the run, keyed by the eval config.

The evaluators themselves live in :mod:`pexp.eval.evaluators`, one module each."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pexp.config import resolve_device, validate_eval
from pexp.errors import ConfigError
from pexp.eval.evaluators import DATA_EVALUATORS, EVALUATORS
from pexp.eval.evaluators.common import RESULTS, eval_dir, run_of
from pexp.eval.evaluators.offmanifold import boundary_height, complement_basis
from pexp.eval.evaluators.pca import pca_results
from pexp.runs import RunDir, config_hash, hashable, run_identity, write_csv, write_json
from pexp.train.loop import load_trained, train

__all__ = ["DATA_EVALUATORS", "EVALUATORS", "RESULTS", "boundary_height", "complement_basis", "eval_dir",
           "evaluate", "evaluate_data", "find_run", "pca_results", "run_of"]


def _cached(out: RunDir, eval_cfg: DictConfig, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """``out/results.csv`` when finished, else ``compute()`` under the directory's lock, saved atomically; the
    marker records the wall time of the session that finished it (make bench reads it)."""
    if not out.complete:
        with out.lock():
            if not out.complete:
                started = time.perf_counter()
                write_csv(out / RESULTS, compute())
                write_json(out / "eval.json", hashable(eval_cfg))  # without the unset keys
                out.mark_complete(dict(seconds=time.perf_counter() - started))
    return pd.read_csv(out / RESULTS)


def evaluate(run: RunDir, eval_cfg: DictConfig, device: str = "auto", progress: bool = True) -> pd.DataFrame:
    """The evaluator ``eval_cfg.name`` on a finished run, computed once and cached in
    ``<run>/eval/<name>-<hash>/results.csv``."""
    validate_eval(OmegaConf.create({"eval": eval_cfg}))
    out = eval_dir(run, eval_cfg)

    def compute() -> pd.DataFrame:
        model, cfg = load_trained(run, resolve_device(device))
        out.count_passes(model)  # recorded with the sitting (sittings.json, COMPLETE)
        return EVALUATORS[eval_cfg.name](model, cfg, eval_cfg, out, progress)

    return _cached(out, eval_cfg, compute)


def evaluate_data(cfg: DictConfig) -> pd.DataFrame:
    """An evaluator of a data set alone, no model (:data:`DATA_EVALUATORS`). Cached like :func:`evaluate`, under
    ``<runs_dir>/<run_name>/<hash of the data config>/eval/<name>-<hash>/``."""
    validate_eval(cfg)
    if cfg.eval.name not in DATA_EVALUATORS:
        raise ConfigError(f"eval.name={cfg.eval.name!r} needs a trained model; data-only evaluators: "
                          f"{', '.join(DATA_EVALUATORS)}")
    run = RunDir(Path(cfg.paths.runs_dir) / str(cfg.run_name) / config_hash(run_identity(cfg)["data"]))
    return _cached(eval_dir(run, cfg.eval), cfg.eval, lambda: DATA_EVALUATORS[cfg.eval.name](cfg, cfg.eval))


def find_run(cfg: DictConfig) -> RunDir:
    """``run=<dir>``: that run; ``run=<experiment name>`` or ``experiment=...``: the run of that config
    (trained first when it is missing)."""
    if cfg.run is not None and Path(str(cfg.run)).is_dir():
        return RunDir(cfg.run)
    return train(cfg)
