"""Paper TS: ``eval=active`` (active hidden units) and ``eval=tangent`` (per-epoch statistics and estimates)."""
from __future__ import annotations

import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from pexp.errors import ConfigError
from pexp.data import load_dataset
from pexp.eval.evaluators.common import _subset, run_of
from pexp.eval.tangent import active_counts, add_estimates, epoch_statistics, loss_and_accuracy
from pexp.models import EntryNet, fold_batch_norm
from pexp.runs import RunDir, write_csv
from pexp.train.loop import state_path


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
