"""What every evaluator shares: the registry of evaluators by ``eval.name`` (each one's schema and function), its
cache directory beside the run, the run it belongs to, seeded subsets."""
from __future__ import annotations

from enum import StrEnum
from typing import Any, Callable

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from pexp.data import Split
from pexp.errors import ConfigError
from pexp.runs import RunDir, config_hash, hashable
from pexp.schema import SCHEMA_PREFIX, cross_check, store

NOT_HASHED = ("batch_size", "progress")
RESULTS = "results.csv"

# Every evaluator by its eval.name (the names eval.name allows): the schema of its eval configs.
SCHEMAS: dict[str, type] = {}
# The functions that compute an evaluator's table: of a trained run, (model, cfg, eval_cfg, out, progress) ...
EVALUATORS: dict[str, Callable[..., pd.DataFrame]] = {}
# ... or of a data set alone, (cfg, eval_cfg). An evaluator in neither (eval=bound) is computed by its figure.
DATA_EVALUATORS: dict[str, Callable[[DictConfig, DictConfig], pd.DataFrame]] = {}


def register(name: str, schema: type, results: Callable[..., pd.DataFrame] | None = None,
             data: bool = False) -> None:
    """``eval.name=<name>``: its schema (a dataclass stored as ``eval/base_<name>``, which its conf/eval options
    extend: ``defaults: [base_<name>, _self_]``) and the function that computes its table, of a trained run, or of
    a data set alone (``data``); none for a table its figure computes. A new evaluator is one schema and function
    registered here, and one conf/eval file."""
    if name in SCHEMAS:
        raise ValueError(f"an evaluator named {name!r} is registered already ({SCHEMAS[name].__name__})")
    SCHEMAS[name] = schema
    store(schema, name, "eval")
    if results is not None:
        (DATA_EVALUATORS if data else EVALUATORS)[name] = results


@cross_check("eval")
def check_name(cfg: Any) -> None:
    """eval.name is a registered evaluator's, and the eval config is built from that evaluator's schema."""
    name = cfg.eval.name
    if name not in SCHEMAS:
        raise ConfigError(f"eval.name={name!r} is not allowed: choose one of {', '.join(SCHEMAS)}")
    if OmegaConf.get_type(cfg.eval) is not SCHEMAS[name]:
        raise ConfigError(f"eval.name={name!r} is not allowed with this eval config: an option of evaluator {name} "
                          f"extends its schema (defaults: [{SCHEMA_PREFIX}{name}, _self_])")


class SplitName(StrEnum):
    """A data set's split, where an evaluator lets its config choose one."""

    train = "train"
    test = "test"


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
