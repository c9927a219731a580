"""Paper TS: ``eval=active`` (active hidden units) and ``eval=tangent`` (per-epoch statistics and estimates)."""
from __future__ import annotations

import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from pexp.config import ConfigError
from pexp.data import load_dataset
from pexp.eval.evaluators.common import _subset, run_of
from pexp.eval.tangent import active_counts, add_estimates, epoch_statistics
from pexp.models import EntryNet
from pexp.runs import RunDir, write_csv


def active_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                   progress: bool) -> pd.DataFrame:  # noqa: ARG001
    """Paper TS: the number of positive hidden units of the final model per input, per hidden layer and in
    total, on a random train subset and the test set: columns split, index, layer1..layerL, total."""
    data = load_dataset(cfg.data)
    device = next(model.parameters()).device
    frames = []
    for name, split, n in (("train", data.train, eval_cfg.n_train), ("test", data.test, eval_cfg.n_test)):
        subset, index = _subset(split, n, int(eval_cfg.seed))
        counts = active_counts(model, subset.x.to(device), int(eval_cfg.batch_size)).cpu().numpy()
        frame = pd.DataFrame(counts, columns=[f"layer{i + 1}" for i in range(counts.shape[1])])
        frames.append(frame.assign(split=name, index=index.numpy(), total=counts.sum(1)))
    return pd.concat(frames, ignore_index=True)[["split", "index", *frames[0].columns[:-3], "total"]]


def tangent_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                    progress: bool) -> pd.DataFrame:
    """Paper TS, eqs. (5)-(7): per epoch state (``train.keep_states``) the train / test cross-entropy and accuracy,
    active-count and sensitivity statistics (:func:`epoch_statistics`), then each estimator's test loss and
    accuracy (:func:`add_estimates`). Finished epochs are kept in ``epochs.csv``, so an interruption resumes."""
    from pexp.train.loop import state_path

    run = run_of(out)
    epochs = int(cfg.train.epochs)
    missing = [epoch for epoch in range(epochs + 1) if not state_path(run, epoch).exists()]
    if missing:
        raise ConfigError(f"eval=tangent needs every epoch's weights: run {run.path} has no "
                          f"{state_path(run, missing[0]).relative_to(run.path)} (train it with train.keep_states=true)")
    data = load_dataset(cfg.data)
    train_subset, _ = _subset(data.train, eval_cfg.n_train, int(eval_cfg.seed))
    test_subset, _ = _subset(data.test, eval_cfg.n_test, int(eval_cfg.seed) + 1)
    loss_train, _ = _subset(data.train, eval_cfg.get("n_loss"), int(eval_cfg.seed) + 2)
    device = next(model.parameters()).device
    part = out / "epochs.csv"
    rows = pd.read_csv(part).to_dict("records") if part.exists() else []
    for epoch in tqdm(range(len(rows), epochs + 1), desc="tangent statistics", unit="epoch", disable=not progress):
        model.load_state_dict(torch.load(state_path(run, epoch), map_location=device, weights_only=True))
        row = epoch_statistics(model, (loss_train.x, loss_train.y), (data.test.x, data.test.y),
                               train_subset.x, test_subset.x, int(eval_cfg.batch_size),
                               float(eval_cfg.membership_temperature))
        rows.append(dict(epoch=epoch, **row))
        write_csv(part, pd.DataFrame(rows))
    stats = pd.DataFrame(rows)
    depth = int(eval_cfg.depth or len(model.blocks))
    seconds = stats["seconds_sensitivity"].sum() / (stats["n_sens_train"] + stats["n_sens_test"]).sum() * 1000
    print(f"[pexp] tangent sensitivity: {seconds:.2f} s per 1,000 inputs ({out.path})")
    return add_estimates(stats, depth, eval_cfg.anchor, eval_cfg.accuracy, bool(eval_cfg.membership_weights))
