"""Paper TS figures: active-neuron histograms (tangent-fig1, fig4), the bound of eq. (2) (tangent-fig2), and the
label-free estimates of the test loss and accuracy over training (tangent-fig3, tangent-table2)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from scipy import stats

from pexp.eval.tangent import ESTIMATORS, estimate_accuracy, estimate_test, mean_absolute_errors, sensitivity_bound
from pexp.figures.base import Claims, claim, collect_runs, data_label
from pexp.figures.compose import compose_experiment

SPLIT_STYLE = {"train": dict(color="tab:blue"), "test": dict(color="tab:orange")}
ESTIMATOR_STYLE = {"eq5": dict(color="tab:green", label="eq. (5): layer-wise l_inf norms (log form)"),
                   "eq6": dict(color="tab:red", label="eq. (6): active-count model psi*"),
                   "eq7": dict(color="tab:purple", label="eq. (7): empirical ||Sens||_F^2")}
# Table 2 of the paper (FIGURES.md): mean absolute error of each estimate of the test CE loss and accuracy.
PUBLISHED_MAE = {"eq5": dict(loss=5.3e-4, accuracy=9.2e-3), "eq6": dict(loss=7.7e-4, accuracy=9.8e-3),
                 "eq7": dict(loss=4.2e-4, accuracy=1.1e-2)}
# Thresholds fixed before measuring.
MAX_SKEW, MAX_EXCESS_KURTOSIS = 0.5, 1.0  # "roughly normal"
WITHIN_FACTOR = 3.0                       # "matches the published MAE": within this factor of it


def _suffix(table: pd.DataFrame) -> str:
    return " [SYNTHETIC stand-in data]" if "synthetic" in set(table["data"]) else ""


def _panel_data(rows: pd.DataFrame) -> str:
    source = data_label(rows)
    return "synthetic stand-in" if source == "synthetic" else source


# --- tangent-fig1 and tangent-fig4: active neurons ------------------------------------------------------------

def count_summary(values: np.ndarray) -> dict:
    """Mean, std, skewness and excess kurtosis of a sample of counts."""
    values = np.asarray(values, dtype=float)
    return dict(n=int(values.size), mean=float(values.mean()), std=float(values.std(ddof=1)),
                skew=float(stats.skew(values)), excess_kurtosis=float(stats.kurtosis(values)))


def roughly_normal(summary: dict) -> bool:
    return abs(summary["skew"]) <= MAX_SKEW and abs(summary["excess_kurtosis"]) <= MAX_EXCESS_KURTOSIS


def _histogram(ax: plt.Axes, rows: pd.DataFrame, column: str) -> None:
    values = rows[column].to_numpy()
    bins = np.arange(values.min() - 0.5, values.max() + 1.5, max(1, int(np.ceil((np.ptp(values) + 1) / 60))))
    for split, style in SPLIT_STYLE.items():
        part = rows.loc[rows["split"] == split, column].to_numpy()
        ax.hist(part, bins=bins, density=True, histtype="step", linewidth=1.4,
                label=f"{split}: {part.mean():.1f} +- {part.std(ddof=1):.1f} (n={len(part)})", **style)
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_active_totals(table: pd.DataFrame, panels: dict[str, str], title: str) -> plt.Figure:
    """One histogram panel per run label: active hidden units (all layers) per input, train vs test."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
    for ax, (label, panel_title) in zip(axes[0], panels.items()):
        rows = table[table["run"] == label]
        _histogram(ax, rows, "total")
        ax.set_title(f"{panel_title} ({_panel_data(rows)})", fontsize=9)
        ax.set_xlabel("active hidden units per input (of all layers)")
    fig.suptitle(f"{title}{_suffix(table)}", fontsize=10)
    fig.tight_layout()
    return fig


def layer_columns(table: pd.DataFrame) -> list[str]:
    return sorted((c for c in table.columns if c.startswith("layer") and c[5:].isdigit()), key=lambda c: int(c[5:]))


def plot_active_layers(table: pd.DataFrame, title: str) -> plt.Figure:
    """Per hidden layer and in total: active units per input, train vs test (one run)."""
    columns = [*layer_columns(table), "total"]
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        _histogram(ax, table, column)
        ax.set_title(f"layer {column[5:]}" if column != "total" else "all hidden layers", fontsize=9)
        ax.set_xlabel("active units per input")
    fig.suptitle(f"{title} ({_panel_data(table)}){_suffix(table)}", fontsize=10)
    fig.tight_layout()
    return fig


def _count_claims(table: pd.DataFrame, groups: dict[str, tuple[str, str]], what: str) -> Claims:
    """One claim per (name -> (run label, column)): mean / std (and shape) of the counts on train and test."""
    out = []
    for name, (label, column) in groups.items():
        rows = table[table["run"] == label]
        measured = {split: count_summary(rows.loc[rows["split"] == split, column]) for split in ("train", "test")}
        out.append(claim(f"{what} {name}: mean and std of the active counts, train and test; the paper assumes "
                         f"they are roughly normal", measured,
                         f"reported; 'roughly normal' = |skew| <= {MAX_SKEW} and |excess kurtosis| <= "
                         f"{MAX_EXCESS_KURTOSIS} on both splits", all(map(roughly_normal, measured.values())),
                         data_label(rows)))
    return out


def fig1_claims(table: pd.DataFrame, metrics: dict[str, dict]) -> Claims:  # noqa: ARG001
    return _count_claims(table, {label: (label, "total") for label in dict.fromkeys(table["run"])},
                         "all hidden units,")


def fig4_claims(table: pd.DataFrame, metrics: dict[str, dict]) -> Claims:  # noqa: ARG001
    label = table["run"].iloc[0]
    groups = {f"layer {c[5:]}": (label, c) for c in layer_columns(table)}
    return _count_claims(table, {**groups, "all layers": (label, "total")}, f"{label},")


# --- tangent-fig2: the bound of eq. (2) -----------------------------------------------------------------------

def n_weights(depth: int, d_in: int, width: int, outputs: int) -> int:
    """Weights of a depth-k ReLU MLP d_in -> (k-1) x width -> outputs (biases do not enter Sens)."""
    return d_in * outputs if depth == 1 else d_in * width + (depth - 2) * width ** 2 + width * outputs


def bound_table(bound_cfg) -> pd.DataFrame:  # noqa: ANN001 - the eval=bound config group
    """Bound(k) of eq. (2) for each panel's settings: columns panel, parameter, value, mu, sigma, w_max, width,
    k, n_theta, bound, log10_bound."""
    depths = [int(k) for k in bound_cfg.depths]
    c = bound_cfg
    settings = ([("a", "mu", mu, mu, c.sigma, c.w_max, c.width) for mu in c.mus]
                + [("b", "sigma", s, c.mu, s, c.w_max, c.width) for s in c.sigmas]
                + [("c", "w_max", w, c.mu, c.sigma, w, c.width) for w in c.w_maxes]
                + [("d", "width", n, c.mu_fraction * n, c.sigma_fraction * n, c.w_max, n) for n in c.widths])
    rows = []
    for panel, parameter, value, mu, sigma, w_max, width in settings:
        for k in depths:
            n_theta = n_weights(k, int(c.d_in), int(width), int(c.outputs))
            bound = sensitivity_bound(k, n_theta, int(c.d_in), float(mu), float(sigma), float(w_max))
            rows.append(dict(panel=panel, parameter=parameter, value=float(value), mu=float(mu), sigma=float(sigma),
                             w_max=float(w_max), width=int(width), k=k, n_theta=n_theta, bound=bound,
                             log10_bound=float(np.log10(bound)) if bound > 0 else -np.inf))
    return pd.DataFrame(rows).assign(data="toy")


def fig2_configs(overrides: Sequence[str]) -> dict[str, DictConfig]:
    """tangent-fig2's one config: the bound's settings (``eval=bound``; other evaluators' settings do not apply)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from pexp import CONF_DIR

    keys = set(OmegaConf.load(Path(CONF_DIR) / "eval" / "bound.yaml"))
    own = [o for o in overrides if not o.startswith("eval.") or o.split("=", 1)[0][5:] in keys]
    return {"bound": compose_experiment("ts_cifar10", ["eval=bound", *own])}


def build_fig2(overrides: Sequence[str], device: str, progress: bool) -> tuple[pd.DataFrame, dict]:  # noqa: ARG001
    from pexp.config import validate_eval

    cfg = fig2_configs(overrides)["bound"]
    validate_eval(cfg)
    return bound_table(cfg.eval), {}


PANEL_TITLES = {"a": "(a) mean active count mu (width {width}, sigma {sigma:g}, w_max {w_max:g})",
                "b": "(b) std sigma (width {width}, mu {mu:g}, w_max {w_max:g})",
                "c": "(c) w_max (width {width}, mu {mu:g}, sigma {sigma:g})",
                "d": "(d) width N (mu = 0.48 N, sigma = 0.04 N, w_max {w_max:g})"}


def plot_fig2(table: pd.DataFrame) -> plt.Figure:
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, (panel, rows) in zip(axes, table.groupby("panel")):
        first = rows.iloc[0]
        for value, curve in rows.groupby("value"):
            ax.semilogy(curve["k"], curve["bound"], marker=".", label=f"{first['parameter']} = {value:g}")
        ax.set_title(PANEL_TITLES[panel].format(**first.to_dict()), fontsize=8.5)
        ax.set_xlabel("depth k (weight layers)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("Bound(k) of eq. (2)")
    fig.suptitle("tangent-fig2: the bound of eq. (2) on ||Sens||_F^2 against depth (formula, no data; "
                 "d_in 3072, 10 outputs)", fontsize=10)
    fig.tight_layout()
    return fig


def fig2_claims(table: pd.DataFrame, metrics: dict[str, dict]) -> Claims:  # noqa: ARG001
    """The bound grows with w_max and with the width at every depth k >= 2; the depth of each curve's maximum
    moves deeper with mu, w_max and the width (for large mu / sigma, 1F1's asymptotics give
    Bound ~ N_theta d_in (mu w_max / k)^(2k) / mu^2, peaking near k = mu w_max / e)."""
    out = []
    for panel, parameter in (("c", "w_max"), ("d", "width")):
        grid = table[(table["panel"] == panel) & (table["k"] >= 2)].pivot(index="k", columns="value",
                                                                           values="log10_bound")
        increasing = bool((np.diff(grid.to_numpy(), axis=1) > 0).all())
        out.append(claim(f"panel ({panel}): the bound grows with {parameter} at every depth k >= 2",
                         {f"log10 bound at k={int(k)}": {f"{v:g}": round(float(b), 3) for v, b in row.items()}
                          for k, row in grid.iloc[[0, len(grid) // 2, -1]].iterrows()},
                         f"strictly increasing in {parameter} for every k >= 2 (at k = 1 no hidden layer: equal)",
                         increasing, "toy"))
    peaks, moves = {}, True
    for panel, rows in table[table["panel"].isin(["a", "c", "d"])].groupby("panel"):
        parameter = rows["parameter"].iloc[0]
        best = rows.loc[rows.groupby("value")["log10_bound"].idxmax()].sort_values("value")
        peaks[f"({panel}) {parameter}"] = {f"{v:g}": int(k) for v, k in zip(best["value"], best["k"])}
        moves &= bool((np.diff(best["k"].to_numpy()) >= 0).all())
    out.append(claim("depth k at which each curve of panels (a), (c), (d) is largest (max over the depths shown)",
                     peaks, "the peak depth does not decrease as mu, w_max or the width grows", moves, "toy"))
    return out


# --- tangent-fig3 and tangent-table2: estimating the test loss and accuracy ----------------------------------

def plot_fig3(table: pd.DataFrame) -> plt.Figure:
    """(a) test cross-entropy, (b) test accuracy over epochs: actual vs the three estimates."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, metric, label in ((axes[0], "loss", "cross-entropy"), (axes[1], "accuracy", "accuracy")):
        ax.plot(table["epoch"], table[f"test_{metric}"], color="black", linewidth=2, label=f"actual test {label}")
        ax.plot(table["epoch"], table[f"train_{metric}"], color="gray", linestyle=":", label=f"train {label}")
        for name, style in ESTIMATOR_STYLE.items():
            ax.plot(table["epoch"], table[f"{metric}_{name}"], linestyle="--", marker=".", markersize=3, **style)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("(a) estimated vs actual test cross-entropy", fontsize=9)
    axes[1].set_title("(b) estimated vs actual test accuracy", fontsize=9)
    fig.suptitle(f"tangent-fig3: label-free estimates over training (4 x 100 ReLU MLP, {_panel_data(table)})",
                 fontsize=10)
    fig.tight_layout()
    return fig


def baseline_errors(table: pd.DataFrame, anchor: str = "previous", accuracy: str = "error") -> dict[str, float]:
    """MAE of the same anchored estimate without any sensitivity (q = 1): what the sensitivities must beat."""
    ones = np.ones(len(table))
    loss = estimate_test(table["train_loss"], table["test_loss"], ones, anchor)
    acc = estimate_accuracy(table["train_accuracy"], table["test_accuracy"], ones, anchor, accuracy)
    return dict(loss=float(np.nanmean(np.abs(loss - table["test_loss"]))),
                accuracy=float(np.nanmean(np.abs(acc - table["test_accuracy"]))))


def _settings(table: pd.DataFrame) -> tuple[str, str]:
    return (str(table["anchor"].iloc[0]) if "anchor" in table else "previous",
            str(table["accuracy_mode"].iloc[0]) if "accuracy_mode" in table else "error")


def fig3_claims(table: pd.DataFrame, metrics: dict[str, dict]) -> Claims:  # noqa: ARG001
    """Each sensitivity improves on the same estimate without one (q = 1)."""
    errors = mean_absolute_errors(table).set_index("estimator")
    baseline = baseline_errors(table, *_settings(table))
    out = []
    for metric, label in (("loss", "cross-entropy"), ("accuracy", "accuracy")):
        measured = {name: float(errors.loc[name, f"mae_{metric}"]) for name in ESTIMATORS}
        beats = {name: value < baseline[metric] for name, value in measured.items()}
        out.append(claim(f"each estimate tracks the test {label} better than the same anchored estimate without a "
                         f"sensitivity (q = 1)", dict(mae=measured, mae_without_sensitivity=baseline[metric],
                                                      better=beats),
                         "MAE of every estimator below the MAE with q = 1", all(beats.values()), data_label(table)))
    return out


def with_settings(table: pd.DataFrame, overrides: Sequence[str]) -> pd.DataFrame:
    eval_cfg = compose_experiment("ts_cifar10", ["eval=tangent", *overrides]).eval
    return table.assign(anchor=eval_cfg.anchor, accuracy_mode=eval_cfg.accuracy,
                        membership_weights=bool(eval_cfg.membership_weights))


def build_fig3(overrides: Sequence[str], device: str, progress: bool) -> tuple[pd.DataFrame, dict]:
    table, metrics = collect_runs({"cifar10": "ts_cifar10"}, "tangent", overrides, device, progress)
    return with_settings(table, overrides), metrics


def table2(estimates: pd.DataFrame) -> pd.DataFrame:
    """Measured MAE beside the published one, per estimator."""
    errors = mean_absolute_errors(estimates)
    anchor, accuracy = _settings(estimates)
    return errors.assign(published_mae_loss=[PUBLISHED_MAE[name]["loss"] for name in errors["estimator"]],
                         published_mae_accuracy=[PUBLISHED_MAE[name]["accuracy"] for name in errors["estimator"]],
                         data=data_label(estimates), anchor=anchor, accuracy_mode=accuracy,
                         membership_weights=bool(estimates["membership_weights"].iloc[0])
                         if "membership_weights" in estimates else False)


def build_table2(overrides: Sequence[str], device: str, progress: bool) -> tuple[pd.DataFrame, dict]:
    estimates, metrics = build_fig3(overrides, device, progress)
    return table2(estimates), metrics


EQUATIONS = {"eq5": "eq. (5) layer-wise l_inf (log form)", "eq6": "eq. (6) active-count psi*",
             "eq7": "eq. (7) empirical ||Sens||_F^2"}


def table2_markdown(table: pd.DataFrame) -> str:
    row = table.iloc[0]
    lines = [f"# tangent-table2: mean absolute error of the label-free estimates ({row['data']}"
             f"{', SYNTHETIC stand-in data' if row['data'] == 'synthetic' else ''})", "",
             f"Settings: anchor={row['anchor']}, accuracy={row['accuracy_mode']}, "
             f"membership_weights={str(row['membership_weights']).lower()}; {int(row['epochs'])} epochs estimated.",
             "", "| estimator | MAE test CE (measured) | MAE test CE (published) | MAE test accuracy (measured) "
             "| MAE test accuracy (published) |", "|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {EQUATIONS[r['estimator']]} | {r['mae_loss']:.2e} | {r['published_mae_loss']:.1e} | "
                     f"{r['mae_accuracy']:.2e} | {r['published_mae_accuracy']:.1e} |")
    return "\n".join(lines) + "\n"


def plot_table2(table: pd.DataFrame) -> plt.Figure:
    """The table, drawn, and the measured against the published MAE (log scale)."""
    fig, (ax_table, ax_bars) = plt.subplots(1, 2, figsize=(13, 3.4), gridspec_kw=dict(width_ratios=[1.6, 1]))
    ax_table.axis("off")
    cells = [[EQUATIONS[r["estimator"]], f"{r['mae_loss']:.2e}", f"{r['published_mae_loss']:.1e}",
              f"{r['mae_accuracy']:.2e}", f"{r['published_mae_accuracy']:.1e}"] for _, r in table.iterrows()]
    drawn = ax_table.table(cellText=cells, colLabels=["estimator", "CE measured", "CE published", "acc. measured",
                                                      "acc. published"], loc="center", cellLoc="center",
                           colWidths=[0.36, 0.16, 0.16, 0.16, 0.16])
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8)
    drawn.scale(1, 1.6)
    positions = np.arange(len(table))
    for offset, column, label in ((-0.3, "mae_loss", "CE measured"), (-0.1, "published_mae_loss", "CE published"),
                                  (0.1, "mae_accuracy", "acc. measured"),
                                  (0.3, "published_mae_accuracy", "acc. published")):
        ax_bars.bar(positions + offset, table[column], width=0.2, label=label,
                    hatch="//" if "published" in column else None)
    ax_bars.set_yscale("log")
    ax_bars.set_xticks(positions, table["estimator"])
    ax_bars.set_ylabel("mean absolute error")
    ax_bars.legend(fontsize=7)
    ax_bars.grid(alpha=0.3, axis="y")
    row = table.iloc[0]
    fig.suptitle(f"tangent-table2: MAE of the test-loss / accuracy estimates (anchor={row['anchor']}, "
                 f"accuracy={row['accuracy_mode']}; {row['data']}){_suffix(table)}", fontsize=10)
    fig.tight_layout()
    return fig


def table2_claims(table: pd.DataFrame, metrics: dict[str, dict]) -> Claims:  # noqa: ARG001
    out = []
    for metric, label in (("loss", "cross-entropy"), ("accuracy", "accuracy")):
        measured = {r["estimator"]: dict(measured=float(r[f"mae_{metric}"]),
                                         published=float(r[f"published_mae_{metric}"]),
                                         ratio=float(r[f"mae_{metric}"] / r[f"published_mae_{metric}"]))
                    for _, r in table.iterrows()}
        holds = all(1 / WITHIN_FACTOR <= m["ratio"] <= WITHIN_FACTOR for m in measured.values())
        out.append(claim(f"Table 2, test {label}: the MAE of each estimate matches the published one", measured,
                         f"measured within a factor {WITHIN_FACTOR:g} of the published MAE for eqs. (5), (6), (7)",
                         holds, data_label(table)))
    best = table.loc[table["mae_loss"].idxmin(), "estimator"]
    out.append(claim("Table 2: eq. (7) (empirical sensitivity) gives the smallest cross-entropy error, as published",
                     dict(best=str(best), mae={r["estimator"]: float(r["mae_loss"]) for _, r in table.iterrows()}),
                     "eq7 has the smallest measured CE MAE", best == "eq7", data_label(table)))
    return out
