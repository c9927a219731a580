"""``eval=pca`` (hidden-layer activations of a run) and ``eval=dataset_pca`` (a whole data set, no model)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from pexp.data import load_dataset
from pexp.eval.evaluators.common import SplitName, _subset, register
from pexp.eval.geometry import cumulative_explained_variance, explained_fractions, numerical_rank, principal_variances
from pexp.models import EntryNet
from pexp.runs import RunDir
from pexp.schema import ScaleKeys, integer


@dataclass
class PcaConfig(ScaleKeys):
    """eval=pca and eval=pca_subset (conf/eval/pca.yaml, pca_subset.yaml)."""

    name: str = "pca"
    n_train: Optional[int] = integer(None, ge=2, null=True)  # a seeded random subset of the training set; null: all
    batch_size: int = integer(500, ge=1)  # forward batch
    seed: int = integer(0, ge=0)


@dataclass
class DatasetPcaConfig(ScaleKeys):
    """eval=dataset_pca (conf/eval/dataset_pca.yaml): no model."""

    name: str = "dataset_pca"
    split: SplitName = SplitName.train
    batch_size: int = integer(5000, ge=1)  # rows per batch of the covariance


def pca_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                progress: bool) -> pd.DataFrame:  # noqa: ARG001
    """Cumulative explained variance of the principal components of each hidden layer's activations over the
    training set (all min(n, width) of them) and the numerical rank of the centred n x width activations
    (:func:`numerical_rank`, the same on every row of a layer): columns layer, name, width, component,
    cumulative, numerical_rank."""
    data = load_dataset(cfg.data)
    subset, _ = _subset(data.train, eval_cfg.n_train, int(eval_cfg.seed))
    device = next(model.parameters()).device
    frames = []
    for layer, name in enumerate(model.layer_names[:-1]):
        with torch.no_grad():  # one layer at a time: at most n x width activations held (10,000 x 4704 floats)
            activations = torch.cat([model.hidden_activations(chunk.to(device))[layer].cpu()
                                     for chunk in subset.x.split(int(eval_cfg.batch_size))])
        squares = principal_variances(activations)
        cumulative = explained_fractions(squares)
        frames.append(pd.DataFrame(dict(layer=layer + 1, name=name, width=activations.shape[1],
                                        component=np.arange(1, len(cumulative) + 1), cumulative=cumulative.numpy(),
                                        numerical_rank=numerical_rank(squares, tuple(activations.shape)))))
    return pd.concat(frames, ignore_index=True)


def dataset_pca_results(cfg: DictConfig, eval_cfg: DictConfig) -> pd.DataFrame:
    """offmanifold-fig1: cumulative explained variance of the principal components of a whole data set's
    ``eval_cfg.split`` (flattened, centred; float64 covariance accumulated in batches): columns component,
    cumulative."""
    data = load_dataset(cfg.data)
    split = data.train if eval_cfg.split == "train" else data.test
    cumulative = cumulative_explained_variance(split.x, batch_size=int(eval_cfg.batch_size))
    return pd.DataFrame(dict(component=np.arange(1, len(cumulative) + 1), cumulative=cumulative.numpy(),
                             n=len(split), data=data.source))


register("pca", PcaConfig, pca_results)
register("dataset_pca", DatasetPcaConfig, dataset_pca_results, data=True)
