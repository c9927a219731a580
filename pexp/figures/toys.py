"""2D toy figures of paper PE: decision boundaries with the data, and geometric margins."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from pexp.eval.geometry import svm_hard_margin
from pexp.figures.base import Claims, claim, number

CLASS_COLORS = {0: "tab:red", 1: "tab:blue"}
LOSS_STYLE = {"ce": dict(color="black", linestyle="-", label="cross-entropy"),
              "se": dict(color="black", linestyle=":", label="squared error")}


def _draw_boundary(ax: plt.Axes, rows: pd.DataFrame, **style: object) -> None:
    for index, (_, segment) in enumerate(rows[rows["kind"] == "boundary"].groupby("segment")):
        ax.plot(segment["x0"], segment["x1"], **{**style, "label": style.get("label") if index == 0 else None})


def _draw_points(ax: plt.Axes, rows: pd.DataFrame) -> None:
    points = rows[rows["kind"] == "point"]
    for target, color in CLASS_COLORS.items():
        chosen = points[points["target"] == target]
        ax.scatter(chosen["x0"], chosen["x1"], s=18, color=color, zorder=3, label=f"class {'AB'[target]}")


def _points(table: pd.DataFrame, **match: object) -> pd.DataFrame:
    """The training-point rows whose columns equal ``match``."""
    rows = table[table["kind"] == "point"]
    for key, value in match.items():
        rows = rows[rows[key] == value]
    return rows


def smallest_margin(table: pd.DataFrame, **match: object) -> float:
    return float(_points(table, **match)["margin"].min())


def plot_pe_fig1(table: pd.DataFrame) -> plt.Figure:
    seeds = sorted(table["seed"].unique())
    columns = 3
    fig, axes = plt.subplots(math.ceil(len(seeds) / columns), columns, figsize=(12, 4 * math.ceil(len(seeds) / 3)),
                             squeeze=False)
    for ax, seed in zip(axes.flat, seeds):
        rows = table[table["seed"] == seed]
        for loss, style in LOSS_STYLE.items():
            _draw_boundary(ax, rows[rows["loss"] == loss], **style)
        _draw_points(ax, rows[rows["loss"] == "ce"])
        censored = _censored(rows)
        ax.set_title(f"seed {seed}: margin CE {smallest_margin(rows, loss='ce'):.2f}, "
                     f"SE {smallest_margin(rows, loss='se'):.2f}"
                     + (f" ({censored} points NOT FLIPPED: censored)" if censored else ""), fontsize=9)
        ax.set_xlim(-5, 35)
        ax.set_ylim(-5, 35)
        ax.set_aspect("equal")
    for ax in axes.flat[len(seeds):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7, loc="upper left")
    exact = "method" in table and (table.loc[table["kind"] == "point", "method"] == "exact").all()
    points = table[table["kind"] == "point"]
    order = " (the authors' random-number order)" if "rng_order" in points and (points["rng_order"] == "authors").all() \
        else ""
    fig.suptitle("pe-fig1: decision boundaries, cross-entropy (solid) vs squared error (dotted); "
                 f"{'exact' if exact else 'searched'} margins{order}", fontsize=10)
    fig.tight_layout()
    return fig


def _censored(table: pd.DataFrame, **match: object) -> int:
    return int(np.isinf(_points(table, **match)["margin"].astype(float)).sum())


def _search_gap(table: pd.DataFrame, **match: object) -> float | None:
    """Largest |exact margin - the l2 search's| over the points both measured (None: no exact margins)."""
    rows = _points(table, **match)
    if "search_margin" not in rows or (rows.get("method") != "exact").any():
        return None
    both = rows[np.isfinite(rows["search_margin"].astype(float))]
    return float((both["search_margin"] - both["margin"]).abs().max()) if len(both) else None


def pe_fig1_claims(table: pd.DataFrame, metrics: dict[str, dict]) -> Claims:
    """One claim per seed: the CE boundary's margin (smallest distance from a training point) is smaller. A seed
    with a censored margin (a point the search could not flip) fails visibly: its minimum is not known."""
    out = []
    for seed in sorted(table["seed"].unique()):
        ce, se = smallest_margin(table, seed=seed, loss="ce"), smallest_margin(table, seed=seed, loss="se")
        accuracy = {loss: metrics[f"{loss}/seed{seed}"]["train_accuracy"] for loss in ("ce", "se")}
        censored = {loss: _censored(table, seed=seed, loss=loss) for loss in ("ce", "se")}
        rows = table[(table["kind"] == "point") & (table["seed"] == seed)]
        method = sorted(set(rows["method"])) if "method" in rows else ["search"]
        out.append(claim(f"seed {seed}: the cross-entropy boundary's margin is smaller than the squared-error one's",
                         dict(margin_ce=ce, margin_se=se, method="+".join(method),
                              censored_points_ce=censored["ce"], censored_points_se=censored["se"],
                              largest_gap_exact_vs_search_ce=_search_gap(table, seed=seed, loss="ce"),
                              largest_gap_exact_vs_search_se=_search_gap(table, seed=seed, loss="se"),
                              train_accuracy_ce=accuracy["ce"], train_accuracy_se=accuracy["se"]),
                         "margin_ce < margin_se, no censored point", ce < se and not any(censored.values()), "toy",
                         judged=f"CE {number(ce)} vs SE {number(se)}"
                         + (f" ({sum(censored.values())} censored)" if any(censored.values()) else "")))
    return out


def _svm(rows: pd.DataFrame):  # noqa: ANN202
    points = rows[rows["kind"] == "point"]
    return svm_hard_margin(torch.tensor(points[["x0", "x1"]].to_numpy()), torch.tensor(points["target"].to_numpy()))


def plot_pe_fig2(table: pd.DataFrame) -> plt.Figure:
    datasets = sorted(table["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows = table[table["dataset"] == dataset]
        _draw_boundary(ax, rows, color="black", linestyle="-", label="cross-entropy (trained)")
        _draw_points(ax, rows)
        svm = _svm(rows)
        points = rows[rows["kind"] == "point"]
        xs = np.linspace(points["x0"].min() - 10, points["x0"].max() + 10, 200)
        w, b = svm.w.numpy(), svm.b
        if abs(w[1]) > 1e-12:
            ax.plot(xs, -(w[0] * xs + b) / w[1], color="tab:green", linestyle="--", label="hard-margin SVM")
        pad_x = 0.15 * (points["x0"].max() - points["x0"].min())
        pad_y = 0.15 * (points["x1"].max() - points["x1"].min())
        ax.set_xlim(points["x0"].min() - pad_x, points["x0"].max() + pad_x)
        ax.set_ylim(points["x1"].min() - pad_y, points["x1"].max() + pad_y)
        ax.set_title(f"data set {dataset}: margin CE {smallest_margin(rows):.3g}, SVM {svm.margin:.3g}",
                     fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("pe-fig2: linear classifier trained with cross-entropy vs the optimal margin", fontsize=10)
    fig.tight_layout()
    return fig


def pe_fig2_claims(table: pd.DataFrame, metrics: dict[str, dict]) -> Claims:  # noqa: ARG001
    """Per data set: the CE margin is far below the hard-margin SVM margin (fixed beforehand: ratio <= 0.5)."""
    out = []
    for dataset in sorted(table["dataset"].unique()):
        rows = table[table["dataset"] == dataset]
        measured, optimal = smallest_margin(rows), _svm(rows).margin
        out.append(claim(f"data set {dataset}: the cross-entropy margin is far below the optimal (SVM) margin",
                         dict(margin_ce=measured, margin_svm=optimal, ratio=measured / optimal),
                         "ratio margin_ce / margin_svm <= 0.5", measured / optimal <= 0.5, "toy",
                         judged=f"ratio {number(measured / optimal)}"))
    return out
