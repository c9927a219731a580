"""Figures of paper OM: boundaries of networks trained on low-dimensional toy data, off-manifold distances."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from pexp.figures.base import Claims, claim
from pexp.figures.toys import CLASS_COLORS

SETTINGS = {"a": "(a) vanilla", "b": "(b) smaller initialisation", "c": "(c) weight decay"}


def _converged(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["reached_target"].astype(bool)]


def shown_seed(table: pd.DataFrame, setting: str) -> tuple[int, bool]:
    """The seed drawn for a setting: its lowest converged seed, else its lowest seed (marked as not converged)."""
    rows = table[table["setting"] == setting]
    converged = _converged(rows)
    return (int(converged["seed"].min()), True) if len(converged) else (int(rows["seed"].min()), False)


def plot_offmanifold_2d(table: pd.DataFrame, title: str) -> plt.Figure:
    fig, axes = plt.subplots(1, len(SETTINGS), figsize=(4.2 * len(SETTINGS), 4.3), squeeze=False)
    for ax, (setting, name) in zip(axes[0], SETTINGS.items()):
        seed, converged = shown_seed(table, setting)
        rows = table[(table["setting"] == setting) & (table["seed"] == seed)]
        for index, (_, segment) in enumerate(rows[rows["kind"] == "boundary"].groupby("segment")):
            ax.plot(segment["x0"], segment["x1"], color="black", label="boundary" if index == 0 else None)
        points = rows[rows["kind"] == "point"]
        for target, color in CLASS_COLORS.items():
            chosen = points[points["target"] == target]
            ax.scatter(chosen["x0"], chosen["x1"], color=color, s=25, zorder=3, label=f"label {target}")
        seeds = table[(table["setting"] == setting) & (table["kind"] == "point")].drop_duplicates("seed")
        ax.set_title(f"{name}, seed {seed}{'' if converged else ' (DID NOT reach the target margin)'}\n"
                     f"median off-manifold distance {points['distance'].median():.3f}; "
                     f"{int(seeds['reached_target'].sum())}/{len(seeds)} seeds converged", fontsize=8)
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_aspect("equal")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def offmanifold_claims(table: pd.DataFrame, metrics: dict[str, dict]) -> Claims:  # noqa: ARG001
    """The off-manifold distance (median over the data points of the converged seeds; inf where the boundary is
    not crossed within the evaluator's max_distance) is larger in (b) and (c) than in (a). Seeds that missed the
    target margin are counted and left out, never silently."""
    points = table[table["kind"] == "point"]
    summary = {}
    for setting in SETTINGS:
        rows = points[points["setting"] == setting]
        seeds = rows.drop_duplicates("seed")
        converged = _converged(rows)
        summary[setting] = dict(
            median_distance=float(converged["distance"].median()) if len(converged) else None,
            share_not_crossed=float((converged["distance"] == float("inf")).mean()) if len(converged) else None,
            converged_seeds=int(seeds["reached_target"].sum()), seeds=len(seeds))
    out = []
    for other in ("b", "c"):
        a, b = summary["a"]["median_distance"], summary[other]["median_distance"]
        out.append(claim(f"the off-manifold distance is larger in {SETTINGS[other]} than in {SETTINGS['a']}",
                         dict(a=summary["a"], **{other: summary[other]}), "median distance (converged seeds) larger",
                         a is not None and b is not None and b > a, "toy"))
    return out


