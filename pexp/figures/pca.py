"""PCA figures: cumulative explained variance of hidden-layer activations (richness-fig1)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pexp.figures.base import Claims, claim, data_label, number, title_suffix

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


LEVELS = (0.90, 0.99)


def layer_counts(curve: pd.DataFrame) -> dict[str, int | float | None]:
    """One hidden layer's spectrum (the rows of one layer and run): its width, how many components it has, the
    share of the variance in the first 80 (all of it when it has fewer), the components needed for 90% and 99%,
    and the numerical rank the evaluator stored (None in an evaluation cached before it stored one)."""
    curve = curve.sort_values("component")
    first = curve[curve["component"] <= PLOTTED_COMPONENTS]["cumulative"]
    rank = curve["numerical_rank"].iloc[0] if "numerical_rank" in curve else None
    return dict(width=int(curve["width"].iloc[0]), components=int(curve["component"].max()),
                **{f"share_{PLOTTED_COMPONENTS}": float(first.iloc[-1])},
                **{f"components_{round(level * 100)}": components_needed(curve, level) for level in LEVELS},
                numerical_rank=None if rank is None or pd.isna(rank) else int(rank))


def layer_pca_claims(table: pd.DataFrame, metrics: dict[str, dict]) -> Claims:  # noqa: ARG001
    """richness-fig1. The paper gives no number: the upper layers "can be explained by the first few principal
    components", "the rank of the activation patterns in the upper layers are much lower than the number of
    nodes", and its plot shows the variance explained by the first 80 components of each layer. Two claims:

    - the paper's visual reading: each fully connected layer's share of the variance in its first 80 components
      is above every convolutional layer's (that the plotted curve is cumulative is our reading);
    - our own pass rule, not the paper's: 90% of the variance within a tenth of the width in components, in each
      fully connected layer.

    Both report, per layer, the share in 80 components, the components for 90% and 99% and the numerical rank."""
    layers = {f"layer{layer}_{name}": layer_counts(curve) for (layer, name), curve in table.groupby(["layer", "name"])}
    share = f"share_{PLOTTED_COMPONENTS}"
    fc = {key: counts[share] for key, counts in layers.items() if key.split("_", 1)[1].startswith("fc")}
    conv = {key: counts[share] for key, counts in layers.items() if key.split("_", 1)[1].startswith("conv")}
    lowest_fc, highest_conv = min(fc.values(), default=None), max(conv.values(), default=None)
    visual = bool(fc and conv) and lowest_fc > highest_conv
    kept = [key for key in fc if layers[key]["components_90"] <= layers[key]["width"] / 10]
    own = bool(fc) and len(kept) == len(fc)
    fc_counts = "; ".join(f"{key.split('_', 1)[1]} {layers[key]['components_90']} of {layers[key]['width']}"
                          for key in fc)
    rank = ("numerical rank: singular values of the centred n x width activations above max(n, width) * "
            "float32 eps * the largest (numpy's matrix_rank tolerance)")
    return [
        claim(f"the paper's reading of its Fig. 1: the upper layers 'can be explained by the first few principal "
              f"components': each fully connected layer keeps a larger share of its variance in the first "
              f"{PLOTTED_COMPONENTS} principal components than every convolutional layer (the figure is not in the "
              f"paper's text: that its curves are cumulative is our reading)",
              dict(layers=layers, lowest_fc_share=lowest_fc, highest_conv_share=highest_conv, rank=rank),
              f"min over the fc layers of the cumulative share in {PLOTTED_COMPONENTS} components > max over the "
              f"conv layers", visual, data_label(table),
              judged=f"lowest fc {number(None if lowest_fc is None else 100 * lowest_fc, '%')}, highest conv "
                     f"{number(None if highest_conv is None else 100 * highest_conv, '%')}"),
        claim("our own pass rule, not stated in the paper (it gives no number): in each fully connected hidden "
              "layer 90% of the variance lies within a tenth of its width in principal components",
              dict(layers=layers, rank=rank),
              "our reading, not the paper's: components for 90% <= width / 10 in every fully connected hidden "
              "layer", own, data_label(table), judged=f"components for 90%: {fc_counts or 'no fc layer'}",
              diagnosis=None if own else
              "The rule is our own reading, not the paper's, which gives no number for 'the first few principal "
              "components' (R, Fig. 1): the paper's visual statement is the claim above. It fails at "
              f"{', '.join(key.split('_', 1)[1] for key in fc if key not in kept)}, a count that moves with "
              "centring, tap point, seed and data set (FIGURES.md, Revision 4)."),
    ]


def components_table(table: pd.DataFrame) -> dict[str, dict[str, dict[str, int | float | None]]]:
    """Per hidden layer (``layer<k>_<name>``) and per training (the ``run`` label): :func:`layer_counts`."""
    out: dict[str, dict[str, dict[str, int | float | None]]] = {}
    for (layer, name, run), curve in table.groupby(["layer", "name", "run"]):
        out.setdefault(f"layer{layer}_{name}", {})[run] = layer_counts(curve)
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
    total = sum(len(runs) - 1 for runs in counts.values()) * len(LEVELS)
    accuracies = {label: dict(train=entry.get("train_accuracy"), test=entry.get("test_accuracy"))
                  for label, entry in metrics.items()}
    return [claim(f"perturbing every layer keeps the hidden layers rich: the {richest} network needs more "
                  "components for 90% and 99% of the variance in each hidden layer than the other trainings",
                  dict(counts=counts, not_more=failing, accuracy=accuracies),
                  f"in every hidden layer and at both levels, {richest} count > each other training's count",
                  not failing, data_label(table),
                  judged=f"{total - len(failing)} of {total} (layer, level, other training) counts larger")]
