"""What a figure is: the runs it needs, how their results become one tidy table, claims, and a plot."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pexp.eval.evaluate import evaluate  # noqa: E402
from pexp.figures.compose import compose_experiment  # noqa: E402
from pexp.runs import atomic_write, write_csv, write_json, write_text  # noqa: E402
from pexp.train.loop import train  # noqa: E402

Claims = list[dict]


@dataclass(frozen=True)
class Run:
    """One training run a figure needs: an experiment, extra overrides (e.g. a seed), and tags that become
    columns of the figure's table."""

    experiment: str
    overrides: tuple[str, ...] = ()
    tags: tuple[tuple[str, object], ...] = ()


@dataclass
class Figure:
    """A figure id: ``runs`` maps a label to an experiment name or a :class:`Run`; ``evaluator`` is the eval
    config group option applied to each run; ``claims(table, metrics)`` and ``plot(table)`` work from the tidy
    table alone (plus each run's metrics.json for the claims)."""

    id: str
    paper: str
    what: str
    runs: dict[str, str | Run]
    evaluator: str
    claims: Callable[[pd.DataFrame, dict[str, dict]], Claims]
    plot: Callable[[pd.DataFrame], plt.Figure]
    # Figures that need no training run (a data set's spectrum, a formula): ``build(overrides, device, progress)``
    # returns the tidy table and a metrics dict, in place of ``runs`` + ``evaluator``.
    build: Callable[[Sequence[str], str, bool], tuple[pd.DataFrame, dict[str, dict]]] | None = None
    # Tables (e.g. tangent-table2): also written as ``<id>.md`` from the tidy table.
    markdown: Callable[[pd.DataFrame], str] | None = None


def data_label(table: pd.DataFrame) -> str:
    sources = sorted(set(table["data"]))
    return sources[0] if len(sources) == 1 else "+".join(sources)


def title_suffix(table: pd.DataFrame) -> str:
    return " [SYNTHETIC stand-in data, not CIFAR-10]" if "synthetic" in set(table["data"]) else ""


def claim(text: str, measured: object, expected: str, holds: bool, data: str) -> dict:
    return dict(claim=text, measured=measured, expected=expected, holds=bool(holds), data=data)


def make_figure(figure: Figure, overrides: Sequence[str], figures_dir: Path | str, device: str = "auto",
                progress: bool = True) -> dict[str, Path]:
    """Train / evaluate what is missing, then write ``<id>.{csv,claims.json,png,pdf}`` atomically."""
    if figure.build is not None:
        table, metrics = figure.build(overrides, device, progress)
        return write_figure(figure, table, metrics, figures_dir)
    table, metrics = collect_runs(figure.runs, figure.evaluator, overrides, device, progress)
    return write_figure(figure, table, metrics, figures_dir)


def collect_runs(runs: dict[str, str | Run], evaluator: str, overrides: Sequence[str], device: str = "auto",
                 progress: bool = True) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Train and evaluate what is missing; the evaluator's results of every run in one table (plus a run, data
    and tag columns) and each run's metrics.json by label."""
    frames, metrics = [], {}
    for label, spec in runs.items():
        spec = spec if isinstance(spec, Run) else Run(spec)
        cfg: DictConfig = compose_experiment(spec.experiment, [f"eval={evaluator}", *spec.overrides, *overrides])
        run = train(cfg)
        results = evaluate(run, cfg.eval, device, progress=progress)
        metrics[label] = json.loads((run / "metrics.json").read_text())
        extra = {key: metrics[label][key] for key in ("reached_target",) if key in metrics[label]}
        frames.append(results.assign(run=label, experiment=spec.experiment, run_dir=str(run.path),
                                     data=metrics[label]["data"], **extra, **dict(spec.tags)))
    return pd.concat(frames, ignore_index=True), metrics


def write_figure(figure: Figure, table: pd.DataFrame, metrics: dict[str, dict], figures_dir: Path | str
                 ) -> dict[str, Path]:
    out = Path(figures_dir)
    paths = {ext: out / f"{figure.id}.{ext}" for ext in ("csv", "claims.json", "png", "pdf")}
    write_csv(paths["csv"], table)
    if figure.markdown is not None:
        paths["md"] = write_text(out / f"{figure.id}.md", figure.markdown(table))
    claims = figure.claims(table, metrics)
    write_json(paths["claims.json"], claims)
    fig = figure.plot(table)
    for ext in ("png", "pdf"):
        atomic_write(paths[ext], lambda tmp, ext=ext: fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight"))
    plt.close(fig)
    for item in claims:
        print(f"[pexp] claim {'HOLDS' if item['holds'] else 'FAILS'}: {item['claim']} -> {item['measured']}")
    return paths
