"""Paper TS: ``eval=active`` (active hidden units), ``eval=tangent`` (per-epoch statistics and estimates) and the
settings of ``eval=bound`` (the bound of eq. (2), whose table tangent-fig2 computes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from pexp.errors import ConfigError
from pexp.data import load_dataset
from pexp.eval.evaluators.common import _subset, register, run_of
from pexp.eval.tangent import active_counts, add_estimates, epoch_statistics, loss_and_accuracy
from pexp.models import EntryNet, fold_batch_norm
from pexp.runs import RunDir, write_csv
from pexp.schema import UNSET, ScaleKeys, cross_check, has_schema, integer, is_number, number, plain_list
from pexp.train.loop import state_path


@dataclass
class ActiveConfig(ScaleKeys):
    """eval=active (conf/eval/active.yaml)."""

    name: str = "active"
    n_train: Optional[int] = integer(None, ge=2, null=True)  # a seeded random subset of the training set; null: all
    n_test: Optional[int] = integer(None, ge=2, null=True)  # null: the whole test set
    batch_size: int = integer(1024, ge=1)
    seed: int = integer(0, ge=0)


@dataclass
class TangentConfig(ActiveConfig):
    """eval=tangent (conf/eval/tangent.yaml): the subsets are eq. (7)'s."""

    name: str = "tangent"
    depth: Optional[int] = integer(None, ge=2, null=True)  # k of psi*(k, mu, sigma); null: the weight layers'


@dataclass
class BoundConfig(ScaleKeys):
    """eval=bound (conf/eval/bound.yaml): the settings of the bound of eq. (2), no data (tangent-fig2 computes its
    table, pexp.figures.tangent.bound_table). The lists of each panel: check_bound_lists."""

    name: str = "bound"
    depths: Any = UNSET
    d_in: int = integer(3072, ge=1)
    outputs: int = integer(10, ge=1)
    width: int = integer(1000, ge=1)
    mu: Any = number(480, ge=0)
    sigma: Any = number(40, gt=0)
    w_max: Any = number(0.1, gt=0)
    mus: Any = UNSET
    sigmas: Any = UNSET
    w_maxes: Any = UNSET
    widths: Any = UNSET
    mu_fraction: Any = number(0.48, gt=0)
    sigma_fraction: Any = number(0.04, gt=0)


# Each list of BoundConfig: its lowest value, whether it is allowed (> or >=), whether of integers.
BOUND_LISTS = (("depths", 1, True, True), ("mus", 0, True, False), ("sigmas", 0, False, False),
               ("w_maxes", 0, False, False), ("widths", 1, True, True))


@cross_check("eval")
def check_bound_lists(cfg: Any) -> None:
    """Each list of eval=bound is a non-empty list of numbers (integers) above its lowest value."""
    if not has_schema(cfg.eval, BoundConfig):
        return
    for key, low, low_allowed, integers in BOUND_LISTS:
        values = plain_list(cfg.eval.get(key))
        if not isinstance(values, list) or not values or any(
                not is_number(v) or (v < low if low_allowed else v <= low)
                or (integers and not float(v).is_integer()) for v in values):
            raise ConfigError(f"eval.{key}={values} is not allowed: must be a non-empty list of "
                              f"{'integers' if integers else 'numbers'} >{'=' if low_allowed else ''} {low}")


def active_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                   progress: bool) -> pd.DataFrame:  # noqa: ARG001
    """Paper TS: the number of positive hidden units of the final model (batch-norm folded, dropout off) per
    input, per hidden layer and in total, on a random train subset and the test set: columns split, index,
    layer1..layerL, total."""
    data = load_dataset(cfg.data)
    device = next(model.parameters()).device
    plain = fold_batch_norm(model)
    frames = []
    for name, split, n in (("train", data.train, eval_cfg.n_train), ("test", data.test, eval_cfg.n_test)):
        subset, index = _subset(split, n, int(eval_cfg.seed))
        counts = active_counts(plain, subset.x.to(device), int(eval_cfg.batch_size)).cpu().numpy()
        frame = pd.DataFrame(counts, columns=[f"layer{i + 1}" for i in range(counts.shape[1])])
        frames.append(frame.assign(split=name, index=index.numpy(), total=counts.sum(1)))
    return pd.concat(frames, ignore_index=True)[["split", "index", *frames[0].columns[:-3], "total"]]


def tangent_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                    progress: bool) -> pd.DataFrame:
    """Paper TS, eqs. (5)-(7): per epoch state (``train.keep_states``, batch-norm folded into the affine layers and
    dropout off, as at evaluation) the label-free statistics of :func:`epoch_statistics` (T(x) on the whole train
    and test sets, ||Sens||_F^2 and eq. (4)'s weights on seeded subsets of ``eval.n_train`` / ``eval.n_test``
    inputs), the training loss and accuracy on the whole train set and, apart, the actual test loss and accuracy
    on the whole test set; then each estimator's test loss and accuracy (:func:`add_estimates`). Finished epochs
    are kept in ``epochs.csv``, so an interruption resumes."""
    run = run_of(out)
    epochs = int(cfg.train.epochs)
    missing = [epoch for epoch in range(epochs + 1) if not state_path(run, epoch).exists()]
    if missing:
        raise ConfigError(f"eval=tangent needs every epoch's weights: run {run.path} has no "
                          f"{state_path(run, missing[0]).relative_to(run.path)} (train it with train.keep_states=true)")
    data = load_dataset(cfg.data)
    _, train_subset = _subset(data.train, eval_cfg.n_train, int(eval_cfg.seed))
    _, test_subset = _subset(data.test, eval_cfg.n_test, int(eval_cfg.seed) + 1)
    device = next(model.parameters()).device
    part = out / "epochs.csv"
    rows = pd.read_csv(part).to_dict("records") if part.exists() else []
    for epoch in tqdm(range(len(rows), epochs + 1), desc="tangent statistics", unit="epoch", disable=not progress):
        model.load_state_dict(torch.load(state_path(run, epoch), map_location=device, weights_only=True))
        plain = fold_batch_norm(model)
        row = epoch_statistics(plain, (data.train.x, data.train.y), data.test.x, train_subset, test_subset,
                               int(eval_cfg.batch_size))
        row["test_loss"], row["test_accuracy"] = loss_and_accuracy(plain, data.test.x, data.test.y)  # the truth
        rows.append(dict(epoch=epoch, **row))
        write_csv(part, pd.DataFrame(rows))
        out.record_sitting()
    stats = pd.DataFrame(rows)
    depth = int(eval_cfg.depth or len(model.blocks))
    inputs = (stats["n_sens_train"] + stats["n_sens_test"]).sum()
    seconds = stats["seconds_sensitivity_train"].sum() + stats["seconds_sensitivity_test"].sum()
    print(f"[pexp] tangent sensitivity: {seconds / inputs * 1000:.2f} s per 1,000 inputs, {seconds:.0f} s for "
          f"{inputs} inputs ({out.path})")
    return add_estimates(stats, depth).assign(batch_norm=bool(cfg.model.get("batch_norm", False)),
                                              dropout=float(cfg.model.get("dropout", 0.0)))


register("active", ActiveConfig, active_results)
register("tangent", TangentConfig, tangent_results)
register("bound", BoundConfig)
