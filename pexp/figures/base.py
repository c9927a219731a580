"""What a figure is: the runs it needs, how their results become one tidy table, claims, and a plot."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
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
from pexp.train.loop import recorded_train_seconds, train  # noqa: E402

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
    # Figures with ``build``: ``configs(overrides)`` gives the composed configs it will use, by label, so that
    # they are checked before any work (figures with ``runs``: see :func:`figure_configs`).
    configs: Callable[[Sequence[str]], dict[str, DictConfig]] | None = None


def run_config(spec: str | Run, evaluator: str, overrides: Sequence[str]) -> DictConfig:
    """The composed config of one run a figure needs: its experiment, ``eval=<evaluator>``, its own overrides,
    then the command line's."""
    spec = spec if isinstance(spec, Run) else Run(spec)
    return compose_experiment(spec.experiment, [f"eval={evaluator}", *spec.overrides, *overrides])


def figure_configs(figure: Figure, overrides: Sequence[str]) -> dict[str, DictConfig]:
    """Every config ``figure`` trains or evaluates with, by label (what ``python -m pexp.figures`` checks whole
    before any work)."""
    if figure.configs is not None:
        return figure.configs(overrides)
    return {label: run_config(spec, figure.evaluator, overrides) for label, spec in figure.runs.items()}


def data_label(table: pd.DataFrame) -> str:
    sources = sorted(set(table["data"]))
    return sources[0] if len(sources) == 1 else "+".join(sources)


def title_suffix(table: pd.DataFrame) -> str:
    return " [SYNTHETIC stand-in data, not CIFAR-10]" if "synthetic" in set(table["data"]) else ""


def claim(text: str, measured: object, expected: str, holds: bool, data: str) -> dict:
    return dict(claim=text, measured=measured, expected=expected, holds=bool(holds), data=data)


def make_figure(figure: Figure, overrides: Sequence[str], figures_dir: Path | str, device: str = "auto",
                progress: bool = True) -> dict[str, Path]:
    """Train / evaluate what is missing, then write ``<id>.{csv,claims.json,png,pdf,meta.json}`` atomically."""
    started = time.perf_counter()
    if figure.build is not None:
        table, metrics = figure.build(overrides, device, progress)
    else:
        table, metrics = collect_runs(figure.runs, figure.evaluator, overrides, device, progress)
    runs = [entry[RUN_INFO] for entry in metrics.values() if isinstance(entry, dict) and RUN_INFO in entry]
    return write_figure(figure, table, metrics, figures_dir, meta=dict(overrides=list(overrides), runs=runs,
                                                                       started=started))


RUN_INFO = "run_info"  # what collect_runs adds to each run's metrics: label, experiment, run dir, hash, times


def collect_runs(runs: dict[str, str | Run], evaluator: str, overrides: Sequence[str], device: str = "auto",
                 progress: bool = True) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Train and evaluate what is missing; the evaluator's results of every run in one table (plus run, data
    and tag columns) and each run's metrics.json by label (plus ``run_info`` for the figure's meta.json)."""
    frames, metrics = [], {}
    for label, spec in runs.items():
        spec = spec if isinstance(spec, Run) else Run(spec)
        cfg = run_config(spec, evaluator, overrides)
        run = train(cfg)
        results = evaluate(run, cfg.eval, device, progress=progress)
        metrics[label] = json.loads((run / "metrics.json").read_text())
        metrics[label][RUN_INFO] = dict(label=label, experiment=spec.experiment, run_dir=str(run.path),
                                        hash=run.path.name, data=metrics[label]["data"],
                                        train_seconds=recorded_train_seconds(run.path))
        extra = {key: metrics[label][key] for key in ("reached_target",) if key in metrics[label]}
        frames.append(results.assign(run=label, experiment=spec.experiment, run_dir=str(run.path),
                                     data=metrics[label]["data"], **extra, **dict(spec.tags)))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), metrics


def figure_meta(figure: Figure, table: pd.DataFrame, overrides: Sequence[str] = (), runs: Sequence[dict] = (),
                started: float | None = None) -> dict:
    """What ``<id>.meta.json`` holds: the figure, the command-line overrides, the runs behind it (label,
    experiment, run dir, config hash), the data sources, the seconds it took and the runs' training seconds."""
    train_times = [run["train_seconds"] for run in runs if run.get("train_seconds") is not None]
    sources = {run["data"] for run in runs} or (set(table["data"]) if "data" in table else set())
    return dict(id=figure.id, paper=figure.paper, what=figure.what, overrides=list(overrides), runs=list(runs),
                data=sorted(map(str, sources)), seconds=None if started is None else time.perf_counter() - started,
                train_seconds=sum(train_times) if train_times else None,
                created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))


def write_figure(figure: Figure, table: pd.DataFrame, metrics: dict[str, dict], figures_dir: Path | str,
                 meta: dict | None = None) -> dict[str, Path]:
    """Write the table, claims, PNG and PDF, and last ``<id>.meta.json`` (``meta``: keyword arguments of
    :func:`figure_meta`), each atomically."""
    out = Path(figures_dir)
    paths = {ext: out / f"{figure.id}.{ext}" for ext in ("csv", "claims.json", "png", "pdf", "meta.json")}
    paths["meta.json"].unlink(missing_ok=True)  # written again last: present only beside a finished set
    write_csv(paths["csv"], table)
    if figure.markdown is not None:
        paths["md"] = write_text(out / f"{figure.id}.md", figure.markdown(table))
    claims = figure.claims(table, metrics)
    write_json(paths["claims.json"], claims)
    fig = figure.plot(table)
    for ext in ("png", "pdf"):
        atomic_write(paths[ext], lambda tmp, ext=ext: fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight"))
    plt.close(fig)
    write_json(paths["meta.json"], figure_meta(figure, table, **(meta or {})))
    for item in claims:
        print(f"[pexp] claim {'HOLDS' if item['holds'] else 'FAILS'}: {item['claim']} -> {item['measured']}")
    return paths
