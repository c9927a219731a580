"""What a figure is: the runs it needs, how their results become one tidy table, claims, and a plot."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from functools import partial
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig, ListConfig  # noqa: E402

from pexp import CONF_DIR  # noqa: E402
from pexp.eval.crosscheck import CROSSCHECK  # noqa: E402
from pexp.eval.evaluate import evaluate  # noqa: E402
from pexp.eval.evaluators.common import eval_dir  # noqa: E402
from pexp.figures.compose import STAND_INS, FigureCommand, compose_experiment, figure_command  # noqa: E402
from pexp.overrides import Overrides, python_command  # noqa: E402
from pexp.runs import atomic_write, write_csv, write_json, write_text  # noqa: E402
from pexp.train.ensemble import train_many  # noqa: E402
from pexp.train.loop import recorded_train_seconds  # noqa: E402
from pexp.errors import ConfigError  # noqa: E402

Claims = list[dict]


@dataclass(frozen=True)
class Run:
    """One training run a figure needs: an experiment, extra overrides (e.g. a seed), and tags that become
    columns of the figure's table."""

    experiment: str
    overrides: tuple[str, ...] = ()
    tags: tuple[tuple[str, object], ...] = ()
    label: str | None = None  # the ``run`` column of the table when not the key (several seeds of one panel)


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
    # Figures that need no training run (a data set's spectrum, a formula): ``build(command, device, progress)``
    # returns the tidy table and a metrics dict, in place of ``runs`` + ``evaluator``.
    build: Callable[[FigureCommand, str, bool], tuple[pd.DataFrame, dict[str, dict]]] | None = None
    # Tables (e.g. tangent-table2): also written as ``<id>.md`` from the tidy table.
    markdown: Callable[[pd.DataFrame], str] | None = None
    # ``seeds=[1,2,3]`` on the command line: every run is made once per seed, the plot draws the mean with a
    # min-max band and the claims are judged per seed and on the seeds pooled (:func:`seeded_claims`).
    seeds: bool = False
    beyond: bool = False  # no paper shows it (the report marks it "beyond the paper")
    # Figures with ``build``: ``configs(command)`` gives the composed configs it will use, by label, so that
    # they are checked before any work (figures with ``runs``: see :func:`figure_configs`).
    configs: Callable[[FigureCommand], dict[str, DictConfig]] | None = None


# Each figure id of FIGURES.md -> what makes it: filled by the package pexp.figures (from the figure modules, which
# build on this one); a package is imported before its modules, so it is full whenever this module is used.
FIGURES: dict[str, Figure] = {}


def run_config(spec: str | Run, evaluator: str, overrides: Overrides) -> DictConfig:
    """The composed config of one run a figure needs: its experiment, ``eval=<evaluator>``, its own overrides,
    then the command line's."""
    spec = spec if isinstance(spec, Run) else Run(spec)
    return compose_experiment(spec.experiment, [f"eval={evaluator}", *spec.overrides, *overrides])


def figure_configs(figure: Figure, command: FigureCommand | Sequence[str]) -> dict[str, DictConfig]:
    """Every config ``figure`` trains or evaluates with, by label (what ``python -m pexp.figures`` checks whole
    before any work, with its seeds)."""
    command = figure_command(command)
    seeds = requested_seeds(figure, command)
    if figure.configs is not None:
        return figure.configs(command)
    evaluator, rest = chosen_evaluator(figure.evaluator, command)
    runs = figure.runs if seeds is None else seeded_runs(figure.runs, seeds)
    return {label: run_config(spec, evaluator, rest) for label, spec in runs.items()}


def data_label(table: pd.DataFrame) -> str:
    sources = sorted(set(table["data"]))
    return sources[0] if len(sources) == 1 else "+".join(sources)


def title_suffix(table: pd.DataFrame) -> str:
    return " [SYNTHETIC stand-in data, not CIFAR-10]" if "synthetic" in set(table["data"]) else ""


def claim(text: str, measured: object, expected: str, holds: bool, data: str, *, judged: object = None,
          diagnostic: bool = False, diagnosis: str | None = None) -> dict:
    """One claim of a figure. ``judged``: the number (or short text) the verdict compares with ``expected``,
    shown first by the report; ``diagnostic``: a check of the project's own machinery, not of a paper (the report
    shows it apart and does not count it); ``diagnosis``: for a claim known to fail, why (paper, authors' code or
    our setup)."""
    item = dict(claim=text, measured=measured, expected=expected, holds=bool(holds), data=data)
    extra = dict(judged=judged, diagnostic=diagnostic or None, diagnosis=diagnosis)
    return dict(item, **{key: value for key, value in extra.items() if value is not None})


def number(value: float | None, unit: str = "", digits: int = 3) -> str:
    """A measured number as a claim's ``judged`` text shows it: ``digits`` significant digits and its unit
    ("none" for a value that was not measured, "inf" for a censored one)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    text = f"{float(value):.{digits}g}"
    return text + (unit if unit in ("%", "x") or not unit else f" {unit}")


def make_figure(figure: Figure, command: FigureCommand | Sequence[str], figures_dir: Path | str,
                device: str = "auto", progress: bool = True) -> dict[str, Path]:
    """Train / evaluate what is missing, then write ``<id>.{csv,claims.json,png,pdf,meta.json}`` atomically.
    ``command``: the command line (:func:`pexp.figures.compose.figure_command`, or its override strings)."""
    started, stages = time.perf_counter(), {}
    command = figure_command(command)
    seeds = requested_seeds(figure, command)
    if figure.build is not None:
        table, metrics = figure.build(command, device, progress)
        stages["build"] = time.perf_counter() - started
    else:
        runs = figure.runs if seeds is None else seeded_runs(figure.runs, seeds)
        table, metrics = collect_runs(runs, figure.evaluator, command, device, progress, stages)
    if seeds is not None:
        figure = replace(figure, claims=partial(seeded_claims, figure.claims, seeds=seeds))
    runs = [entry[RUN_INFO] for entry in metrics.values() if isinstance(entry, dict) and RUN_INFO in entry]
    return write_figure(figure, table, metrics, figures_dir, meta=dict(overrides=command.overrides.strings(),
                                                                       runs=runs, started=started, stages=stages))


RUN_INFO = "run_info"  # what collect_runs adds to each run's metrics: label, experiment, run dir, hash, times,
# the evaluation folder the figure read


def collect_runs(runs: dict[str, str | Run], evaluator: str, command: FigureCommand | Sequence[str],
                 device: str = "auto", progress: bool = True,
                 stages: dict[str, float] | None = None) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Train what is missing (a figure's full-batch toy runs together, :func:`pexp.train.ensemble.train_many`),
    then evaluate; the evaluator's results of every run in one table (plus run, data and tag columns) and each
    run's metrics.json by label (plus ``run_info`` for the figure's meta.json). ``stages`` gets the wall seconds
    of training and of evaluation."""
    stages = {} if stages is None else stages
    evaluator, overrides = chosen_evaluator(evaluator, figure_command(command))
    specs = {label: spec if isinstance(spec, Run) else Run(spec) for label, spec in runs.items()}
    cfgs: dict[str, DictConfig] = {label: run_config(spec, evaluator, overrides) for label, spec in specs.items()}
    started = time.perf_counter()
    trained = dict(zip(cfgs, train_many(list(cfgs.values()))))
    stages["train"], started = time.perf_counter() - started, time.perf_counter()
    frames, metrics = [], {}
    for label, spec in specs.items():
        cfg, run = cfgs[label], trained[label]
        results = evaluate(run, cfg.eval, device, progress=progress)
        metrics[label] = json.loads((run / "metrics.json").read_text())
        metrics[label][RUN_INFO] = dict(label=label, experiment=spec.experiment, run_dir=str(run.path),
                                        hash=run.path.name, data=metrics[label]["data"],
                                        train_seconds=recorded_train_seconds(run.path),
                                        eval_dir=str(eval_dir(run, cfg.eval).path))
        crosscheck = eval_dir(run, cfg.eval) / CROSSCHECK
        if crosscheck.exists():  # an independent check of these margins was run (evaluate crosscheck=true)
            metrics[label]["crosscheck"] = pd.read_csv(crosscheck).to_dict("records")
        extra = {key: metrics[label][key] for key in ("reached_target", "target_margin", "final_margin")
                 if key in metrics[label]}
        frames.append(results.assign(run=spec.label or label, experiment=spec.experiment, run_dir=str(run.path),
                                     data=metrics[label]["data"], **extra, **dict(spec.tags)))
    stages["evaluate"] = time.perf_counter() - started
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), metrics


def requested_seeds(figure: Figure, command: FigureCommand | Sequence[str]) -> list[int] | None:
    """The command line's ``seeds`` (``seeds=[1,2,3]``: the composed config's list), None when not set; a figure
    that does not take seeds, or seeds that are not distinct integers >= 0, is a one-line error."""

    command = figure_command(command)
    seeds = command.cfg.get("seeds")
    if seeds in (None, "None", ""):  # null, also as Python spells it, or left empty
        return None
    typed = command.overrides.text("seeds", default=str(seeds))
    if not figure.seeds:
        allowed = ", ".join(sorted(figure_id for figure_id, item in FIGURES.items() if item.seeds))
        raise ConfigError(f"seeds={typed} is not allowed for fig={figure.id}: only {allowed} take seeds")
    seeds = list(seeds) if isinstance(seeds, ListConfig) else [seeds]
    if not seeds or not all(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 for seed in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={typed} is not allowed: give distinct integers >= 0, e.g. seeds=[1,2,3]")
    return seeds


def seeded_runs(runs: dict[str, str | Run], seeds: Sequence[int]) -> dict[str, Run]:
    """Each run once per seed: key ``<label>/seed<s>``, override ``seed=<s>``, a ``seed`` tag, and the table's
    ``run`` column still ``<label>`` (so a panel holds every seed of its run)."""
    out = {}
    for label, spec in runs.items():
        spec = spec if isinstance(spec, Run) else Run(spec)
        for seed in seeds:
            out[f"{label}/seed{seed}"] = Run(spec.experiment, (*spec.overrides, f"seed={seed}"),
                                             (*spec.tags, ("seed", seed)), label)
    return out


def multirun_commands(figure: Figure, seeds: Sequence[int], command: FigureCommand | Sequence[str],
                      jobs: int) -> list[list[str]]:
    """The ``python -m pexp.train -m ... seed=1,2,3`` Hydra multiruns (joblib launcher, ``jobs`` in parallel) that
    train every run of ``figure`` for each seed, as few as the runs allow; the figure then finds
    them by hash. ``synthetic=true`` becomes the stand-in data set, as :func:`compose_experiment` does it."""
    command = figure_command(command)
    kept = command.runs.without("eval", "synthetic", under=("eval",))
    # runs of one experiment whose overrides differ in one key's value (pe-fig5's three radii) are one multirun
    # over those values, so that the pool of jobs stays full; the seed varies slowest
    groups: dict[tuple, list[Run]] = {}
    for spec in dict.fromkeys(spec if isinstance(spec, Run) else Run(spec) for spec in figure.runs.values()):
        own = Overrides(spec.overrides)
        plain = all(not item.is_sweep_override() and not item.is_delete() and not isinstance(item.value(), (list, dict))
                    for item in own)
        key = (spec.experiment, tuple(item.get_key_element() for item in own)) if plain else (spec,)
        groups.setdefault(key, []).append(spec)
    sweeps = []
    for key, specs in groups.items():
        values: dict[str, list[str]] = {}
        for item in (item for spec in specs for item in Overrides(spec.overrides)) if len(key) == 2 else ():
            if item.get_value_string() not in values.setdefault(item.get_key_element(), []):
                values[item.get_key_element()].append(item.get_value_string())
        if len(specs) > 1 and math.prod(map(len, values.values())) == len(specs):  # exactly these runs
            sweeps.append((specs[0], [f"{k}={','.join(v)}" for k, v in values.items()]))
        else:
            sweeps += [(spec, list(spec.overrides)) for spec in specs]
    # and experiments swept with the same overrides on the same data are one multirun over the experiments
    merged: dict[tuple, list[str]] = {}
    for spec, swept in sweeps:
        cfg = compose_experiment(spec.experiment, [*spec.overrides, *command.runs])
        data = [f"data={cfg.data.name}"] if cfg.get("synthetic") and cfg.data.name in STAND_INS.values() else []
        merged.setdefault((tuple(swept), tuple(data), str(cfg.data.name)), []).append(spec.experiment)
    return [python_command("pexp.train", [f"experiment={','.join(experiments)}", f"seed={','.join(map(str, seeds))}"],
                           swept, kept, data, ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={int(jobs)}",
                                               "train.progress=false"], multirun=True)
            for (swept, data, _), experiments in merged.items()]


def _leaves(value: object, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested dict, by their dotted path."""
    if isinstance(value, dict):
        return {key: number for name, item in value.items()
                for key, number in _leaves(item, f"{prefix}{name}.").items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return {prefix.rstrip("."): float(value)}
    return {}


def seeded_claims(claims: Callable[[pd.DataFrame, dict[str, dict]], Claims], table: pd.DataFrame,
                  metrics: dict[str, dict], seeds: Sequence[int]) -> Claims:
    """A figure's claims over several seeds: judged on each seed alone (``seed <s>: ...``) and on the seeds
    pooled (``mean of n seeds: ...``). With as many points per seed, the pooled CDF is exactly the mean of the
    seeds' CDFs, so the pooled claim judges the drawn mean curve; its ``measured`` adds ``holds_per_seed`` and
    ``spread``: each number the claim measured, as [min, max] over the seeds; its ``judged`` and ``diagnosis`` are
    those of the seeds pooled, each seed's claim keeps its own. Run metrics are averaged over the seeds for the
    pooled claim (accuracies: the mean accuracy)."""
    per_seed: dict[int, Claims] = {}
    for seed in seeds:
        seed_metrics = {key.rsplit("/seed", 1)[0]: value for key, value in metrics.items()
                        if key.endswith(f"/seed{seed}")}
        per_seed[seed] = claims(table[table["seed"] == seed], seed_metrics)
    labels = {key.rsplit("/seed", 1)[0] for key in metrics}
    mean_metrics = {}
    for label in labels:
        runs = [metrics[f"{label}/seed{seed}"] for seed in seeds]
        mean_metrics[label] = {key: float(np.mean([run[key] for run in runs])) for key, value in runs[0].items()
                               if isinstance(value, (int, float)) and not isinstance(value, bool)
                               and all(isinstance(run.get(key), (int, float)) for run in runs)}
    pooled = claims(table, mean_metrics)
    out = []
    for index, item in enumerate(pooled):
        seed_items = [per_seed[seed][index] for seed in seeds]
        values = [_leaves(seed_item["measured"]) for seed_item in seed_items]
        spread = {key: [min(v[key] for v in values), max(v[key] for v in values)]
                  for key in values[0] if all(key in v for v in values)}
        measured = dict(mean=item["measured"], holds_per_seed={str(seed): bool(seed_item["holds"])
                                                              for seed, seed_item in zip(seeds, seed_items)},
                        spread=spread)
        out.append(dict(item, claim=f"mean of {len(seeds)} seeds: {item['claim']}", measured=measured))
    for seed in seeds:
        out.extend(dict(item, claim=f"seed {seed}: {item['claim']}") for item in per_seed[seed])
    return out


def chosen_evaluator(evaluator: str, command: FigureCommand) -> tuple[str, Overrides]:
    """A figure's eval config, or another option of the same evaluator named on the command line
    (e.g. ``eval=margin_authors`` for a margin figure): that option and the overrides for the runs."""
    picked, rest = command.overrides.value("eval"), command.runs.without("eval")
    if picked is None or picked == evaluator:
        return evaluator, rest
    options = sorted(path.stem for path in (Path(CONF_DIR) / "eval").glob("*.yaml")
                     if path.stem == evaluator or path.stem.startswith(f"{evaluator}_"))
    if picked not in options:
        raise ConfigError(f"eval={picked} is not allowed for this figure: choose one of {', '.join(options)}")
    return str(picked), rest


def figure_meta(figure: Figure, table: pd.DataFrame, overrides: Sequence[str] = (), runs: Sequence[dict] = (),
                started: float | None = None, stages: dict[str, float] | None = None) -> dict:
    """What ``<id>.meta.json`` holds: the figure, the command-line overrides, the runs behind it (label,
    experiment, run dir, config hash), the data sources, the seconds it took, the wall seconds of its stages
    this time (train, evaluate or build, draw: reused runs and evaluations cost ~0) and the runs' recorded
    training seconds."""
    train_times = [run["train_seconds"] for run in runs if run.get("train_seconds") is not None]
    sources = {run["data"] for run in runs} or (set(table["data"]) if "data" in table else set())
    return dict(id=figure.id, paper=figure.paper, what=figure.what, beyond_the_paper=figure.beyond,
                overrides=list(overrides), runs=list(runs),
                data=sorted(map(str, sources)), seconds=None if started is None else time.perf_counter() - started,
                stage_seconds=dict(stages or {}), train_seconds=sum(train_times) if train_times else None,
                created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))


def write_figure(figure: Figure, table: pd.DataFrame, metrics: dict[str, dict], figures_dir: Path | str,
                 meta: dict | None = None) -> dict[str, Path]:
    """Write the table, claims, PNG and PDF, and last ``<id>.meta.json`` (``meta``: keyword arguments of
    :func:`figure_meta`), each atomically."""
    drawing, out = time.perf_counter(), Path(figures_dir)
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
    meta = dict(meta or {})
    meta["stages"] = {**meta.get("stages", {}), "draw": time.perf_counter() - drawing}
    write_json(paths["meta.json"], figure_meta(figure, table, **meta))
    for item in claims:
        print(f"[pexp] claim {'HOLDS' if item['holds'] else 'FAILS'}: {item['claim']} -> {item['measured']}")
    return paths
