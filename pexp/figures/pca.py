"""PCA figures: cumulative explained variance of hidden-layer activations (richness-fig1)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pexp.figures.base import Claims, claim, data_label, title_suffix

PLOTTED_COMPONENTS = 80


def components_needed(curve: pd.DataFrame, level: float) -> int:
    """Smallest number of components whose cumulative explained variance reaches ``level``."""
    cumulative = curve.sort_values("component")["cumulative"].to_numpy()
    return int(np.searchsorted(cumulative, level - 1e-12) + 1)


def plot_layer_pca(table: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (layer, name, width), curve in table.groupby(["layer", "name", "width"]):
        curve = curve[curve["component"] <= PLOTTED_COMPONENTS]
        ax.plot(curve["component"], curve["cumulative"], label=f"layer {layer} ({name}, {width} units)")
    ax.set_xlabel("number of principal components")
    ax.set_ylabel("cumulative fraction of variance explained")
    ax.set_xlim(1, PLOTTED_COMPONENTS)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"richness-fig1: PCA of hidden-layer activations (training set){title_suffix(table)}",
                 fontsize=9)
    fig.tight_layout()
    return fig


def layer_pca_claims(table: pd.DataFrame, metrics: dict[str, dict]) -> Claims:  # noqa: ARG001
    """Upper layers are low-dimensional: components for 90% / 99% of the variance, per layer, against its width.
    'Far fewer' is fixed beforehand as at most a tenth of the width for 90% in the two fully connected layers."""
    measured, holds = {}, True
    for (layer, name, width), curve in table.groupby(["layer", "name", "width"]):
        n90, n99 = components_needed(curve, 0.90), components_needed(curve, 0.99)
        measured[f"layer{layer}_{name}"] = dict(width=int(width), components_90=n90, components_99=n99)
        if name.startswith("fc"):
            holds &= n90 <= width / 10
    return [claim("the upper layers are low-dimensional: far fewer components than units carry 90% (99%) of the "
                  "variance", measured, "components for 90% <= width / 10 in the fully connected hidden layers",
                  holds, data_label(table))]


LEVELS = (0.90, 0.99)


def components_table(table: pd.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """Per hidden layer (``layer<k>_<name>``) and per training (the ``run`` label): the components needed for 90%
    and 99% of the variance, the layer's width and how many components the subset has."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for (layer, name, width, run), curve in table.groupby(["layer", "name", "width", "run"]):
        out.setdefault(f"layer{layer}_{name}", {})[run] = dict(
            width=int(width), components=int(curve["component"].max()),
            **{f"components_{round(level * 100)}": components_needed(curve, level) for level in LEVELS})
    return out


def plot_trained_layer_pca(table: pd.DataFrame, order: dict[str, str], title: str) -> plt.Figure:
    """One panel per hidden layer: the cumulative explained variance of each training (``order``: run label ->
    legend text) over a log number of components, with the 90% and 99% levels and each curve's count there."""
    layers = table[["layer", "name", "width"]].drop_duplicates().sort_values("layer").to_numpy()
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.9), sharey=True, squeeze=False)
    counts = components_table(table)
    for ax, (layer, name, width) in zip(axes[0], layers):
        rows = table[table["layer"] == layer]
        for label, text in order.items():
            curve = rows[rows["run"] == label].sort_values("component")
            found = counts[f"layer{layer}_{name}"].get(label, {})
            ax.plot(curve["component"], curve["cumulative"],
                    label=f"{text}: {found.get('components_90')} / {found.get('components_99')}")
        for level in LEVELS:
            ax.axhline(level, color="grey", linewidth=0.7, linestyle=":")
        ax.set_xscale("log")
        ax.set_xlim(1, rows["component"].max())
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        ax.set_title(f"layer {layer} ({name}, {width} units)", fontsize=9)
        ax.set_xlabel("number of principal components")
        ax.legend(fontsize=7, loc="lower right", title="components for 90% / 99%", title_fontsize=7)
    axes[0][0].set_ylabel("cumulative fraction of variance explained")
    fig.suptitle(f"{title}{title_suffix(table)}", fontsize=10)
    fig.tight_layout()
    return fig


def richer_layers_claims(table: pd.DataFrame, metrics: dict[str, dict], richest: str = "all layers") \
        -> Claims:
    """richness-fig3 (paper R's mechanism, beyond the paper): the network trained with every layer perturbed
    needs more components for 90% and for 99% of the variance than each other training, in every hidden layer.
    Measured: the counts per layer and training, and the (layer, level) pairs where it does not."""
    counts = components_table(table)
    failing = [f"{layer} {round(level * 100)}%: {richest} {runs[richest][f'components_{round(level * 100)}']} vs "
               f"{other} {found[f'components_{round(level * 100)}']}"
               for layer, runs in counts.items() for level in LEVELS
               for other, found in runs.items() if other != richest
               and runs[richest][f"components_{round(level * 100)}"] <= found[f"components_{round(level * 100)}"]]
    accuracies = {label: dict(train=entry.get("train_accuracy"), test=entry.get("test_accuracy"))
                  for label, entry in metrics.items()}
    return [claim(f"perturbing every layer keeps the hidden layers rich: the {richest} network needs more "
                  "components for 90% and 99% of the variance in each hidden layer than the other trainings",
                  dict(counts=counts, not_more=failing, accuracy=accuracies),
                  f"in every hidden layer and at both levels, {richest} count > each other training's count",
                  not failing, data_label(table))]
