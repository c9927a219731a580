"""Margin-CDF figures (papers R and PE): % of points misclassified against the l_inf size of the disturbance."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pexp.figures.base import Claims, claim, data_label, title_suffix

SPLIT_STYLE = {"train": dict(color="tab:blue", linestyle="-"), "test": dict(color="tab:orange", linestyle="--")}


def margin_cdf(margins: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Percentage of points whose margin is at most each size (margin 0: already misclassified)."""
    margins = np.sort(np.asarray(margins, dtype=float))
    return 100.0 * np.searchsorted(margins, sizes, side="right") / max(len(margins), 1)


def plot_margin_cdfs(table: pd.DataFrame, panels: dict[str, str], title: str = "Margin CDFs",
                     x_max: float | None = None) -> plt.Figure:
    """One panel per run label (in ``panels`` order, titled by its value), train and test curves in each.
    ``x_max`` defaults to the largest finite margin rounded up to 0.05 (at least 0.1)."""
    if x_max is None:
        finite = table["margin"][np.isfinite(table["margin"])]
        x_max = max(0.1, math.ceil(float(finite.max() if len(finite) else 0) / 0.05) * 0.05)
    sizes = np.linspace(0.0, x_max, 401)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), sharey=True, squeeze=False)
    for ax, (label, panel_title) in zip(axes[0], panels.items()):
        rows = table[table["run"] == label]
        for split, style in SPLIT_STYLE.items():
            margins = rows.loc[rows["split"] == split, "margin"].to_numpy()
            ax.plot(sizes, margin_cdf(margins, sizes), label=f"{split} ({len(margins)} points)", **style)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(r"$\ell_\infty$ size of the disturbance")
        ax.set_xlim(0, x_max)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0][0].set_ylabel("% of points misclassified")
    fig.suptitle(f"{title}{title_suffix(table)}", fontsize=10)
    fig.tight_layout()
    return fig


def median_margins(table: pd.DataFrame, label: str, lossless_only: bool = False) -> dict[str, float]:
    rows = table[table["run"] == label]
    if lossless_only:
        rows = rows[rows["lossless"].astype(bool)]
    out = {split: float(rows.loc[rows["split"] == split, "margin"].median()) for split in ("train", "test")}
    ratio = out["train"] / out["test"] if out["test"] > 0 else math.inf
    return dict(median_train=out["train"], median_test=out["test"], ratio_train_over_test=ratio)


def all_vs_first_claims(table: pd.DataFrame, metrics: dict[str, dict]) -> Claims:
    """richness-fig2 / pe-fig6: with only the input perturbed the train margins are much larger than the test
    margins; with every layer perturbed they are close. Thresholds fixed before measuring: 'much larger' is a
    train/test median ratio >= 1.5; 'close' is a ratio <= 1.25 and below the first-layer-only ratio."""
    data = data_label(table)
    measured = {}
    for label in ("first", "all"):
        measured[label] = median_margins(table, label)
        measured[label]["test_accuracy"] = metrics[label].get("test_accuracy")
        measured[label]["train_accuracy"] = metrics[label].get("train_accuracy")
        if data == "cifar10":
            measured[label]["lossless_test"] = median_margins(table, label, lossless_only=True)["median_test"]
            measured[label]["test_accuracy_lossless"] = metrics[label].get("test_accuracy_lossless")
    first, every = measured["first"]["ratio_train_over_test"], measured["all"]["ratio_train_over_test"]
    gaps = {label: cdf_gap(table, label) for label in ("first", "all")}
    return [
        claim("first layer only: median train margin much larger than median test margin", measured["first"],
              "train/test median ratio >= 1.5", first >= 1.5, data),
        claim("all layers: train and test margins close", measured["all"],
              "train/test median ratio <= 1.25 and below the first-layer-only ratio",
              every <= 1.25 and every < first, data),
        claim("over the paper's plotted range (0 to 0.1) the test CDF lies further above the train CDF with the "
              "input only perturbed than with every layer perturbed",
              dict(mean_gap_percentage_points_first=gaps["first"], mean_gap_percentage_points_all=gaps["all"]),
              "mean gap (test % misclassified - train %) over [0, 0.1]: first > all", gaps["first"] > gaps["all"],
              data),
    ]


def cdf_gap(table: pd.DataFrame, label: str, x_max: float = 0.1) -> float:
    """Mean over sizes in [0, x_max] of the test minus the train CDF of run ``label``, in percentage points."""
    sizes = np.linspace(0.0, x_max, 101)
    rows = table[table["run"] == label]
    curves = {split: margin_cdf(rows.loc[rows["split"] == split, "margin"].to_numpy(), sizes)
              for split in ("train", "test")}
    return float((curves["test"] - curves["train"]).mean())


def small_test_margin_claims(table: pd.DataFrame, metrics: dict[str, dict]) -> Claims:
    """pe-fig4: neither loss gives test margin. 'Small' is fixed beforehand as a median test margin below 0.1,
    the end of the paper's plotted range."""
    data = data_label(table)
    out = []
    for label in sorted(table["run"].unique()):
        measured = median_margins(table, label)
        measured["test_accuracy"] = metrics[label].get("test_accuracy")
        out.append(claim(f"{label}: small test margins", measured, "median test margin < 0.1",
                         measured["median_test"] < 0.1, data))
    return out


def eps_sweep_claims(table: pd.DataFrame, metrics: dict[str, dict]) -> Claims:
    """pe-fig5: train margins grow with eps; at the largest eps the training error no longer reaches zero; test
    margins are largest at the largest eps (medians)."""
    data = data_label(table)
    labels = sorted(table["run"].unique(), key=lambda label: float(table.loc[table["run"] == label, "eps"].iloc[0]))
    medians = {label: median_margins(table, label) for label in labels}
    train = [medians[label]["median_train"] for label in labels]
    test = [medians[label]["median_test"] for label in labels]
    errors = {label: 1 - metrics[label]["train_accuracy"] for label in labels}
    return [
        claim("train margins grow with eps", dict(zip(labels, train)), "median train margin increasing in eps",
              all(a < b for a, b in zip(train, train[1:])), data),
        claim(f"at {labels[-1]} the training error no longer reaches zero", errors,
              f"final training error at {labels[-1]} > 0", errors[labels[-1]] > 0, data),
        claim(f"test margins are largest at {labels[-1]}", dict(zip(labels, test)),
              "median test margin largest at the largest eps", test[-1] == max(test), data),
    ]
