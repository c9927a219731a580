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
