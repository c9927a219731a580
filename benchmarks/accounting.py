"""What the figures of an output folder took, from the records of their runs, and the compute floor of each stage.

For every ``<output-dir>/figures/<id>.meta.json`` the time of its stages is summed from what the work recorded:

- train: each run's seconds over all its sittings (``sittings`` of its COMPLETE marker); a run trained in an
  ensemble of toy runs counts its share of the ensemble's epochs (its train_log.csv); older runs without
  ``sittings`` count their train_log.csv (the epochs only);
- evaluate: each run's evaluation folder (``eval_dir`` of the meta's run; older metas: the run's only evaluation
  folder), seconds over all its sittings, else the seconds its marker recorded;
- draw (and build, for figures computed by their own code): the meta's ``stage_seconds``; a build's less the
  recorded seconds of the runs and evaluations it listed that were finished during that call (their own rows
  hold them).

A run (or evaluation) that several figures use counts in each figure's table, marked shared, and once in the
total. Reused runs count with their recorded seconds: the total is what the work took, over every sitting.

The floor of a stage is the multiply-adds of its model passes over this machine's throughput at the thread count the
stage ran with, measured once per call and count (float32 ``torch.mm`` of 1024 x 1024 matrices; ``conv2d`` of
PE-net's second convolution on a batch of 50), the FLOPs of each measured op counted by
``torch.utils.flop_counter``. Per model, F = the FLOPs of one sample's forward pass (``FlopCounterMode`` on the
model built from the run's config), split into matmul and convolution FLOPs, each over its own rate. A stage's
passes come from the counters its sittings recorded ("counted"): forward rows x F, backward rows that reached the
weights (a weight update: input and weight gradients, the first affine layer's input gradient excepted, which no
update computes) x (2F - F_first), other backward rows (the input gradients of the perturbation and margin searches)
x F. Without counters (older runs, toy ensembles whose backward pass is written by hand) the training passes come
from the config ("formula"): per epoch, n_train rows forward and backward for a plain epoch; Algorithm 1 at a radius
> 0 adds per sample 2 x pieces - 1 forward and input-gradient backward rows for the search (its first step is one
pass over the clean batch, the next pieces - 1 over both perturbed copies) and trains on the two perturbed copies (2
forward, 2 weight backward). The formula leaves out the error counts of the log rows; an evaluation without counters
has no floor. Stages above 2x their floor are flagged.

``python benchmarks/accounting.py [--output-dir DIR]`` (default: $PEXP_OUTPUT, else outputs) prints one table per
figure and the total, and writes them to ``<output-dir>/bench/accounting.{json,md}`` (``--bench-dir``: elsewhere).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's pexp, whatever is installed

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from pexp.data import load_dataset  # noqa: E402
from pexp.errors import ConfigError  # noqa: E402
from pexp.models import build_model  # noqa: E402
from pexp.runs import COMPLETE, cpu_model, write_json, write_text  # noqa: E402
from pexp.train.loop import recorded_train_seconds  # noqa: E402
from pexp.train.perturb import eps_at_epoch  # noqa: E402

SLOW = 2.0  # a stage above this many times its floor is flagged
MATMUL_OPS = ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear")
CONV_OPS = ("convolution", "conv2d", "conv1d", "conv3d", "_convolution")
MATMUL_SIZE = 1024
CONV_SHAPES = ((50, 12, 14, 14), (32, 12, 5, 5))  # PE-net (size 2)'s second convolution on a batch of 50


# ------------------------------------------------------------------------------------------- throughput
def counted_flops(fn, *args, module: str = "Global") -> dict[str, int]:
    """The FLOPs of ``fn(*args)`` by ``torch.utils.flop_counter``, split into matmul, conv and other: all of them,
    or those of one ``module`` (``<class>.<name>``, as the counter names a module)."""
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    split = Counter()
    for op, flops in counter.get_flop_counts().get(module, {}).items():
        name = str(op).split(".")[1] if "." in str(op) else str(op)
        split["matmul" if name in MATMUL_OPS else "conv" if name in CONV_OPS else "other"] += int(flops)
    return dict(matmul=split["matmul"], conv=split["conv"], other=split["other"])


def _rate(fn, *args, round_seconds: float = 0.05, rounds: int = 10) -> tuple[float, int]:
    """(GFLOP/s, FLOPs of one call) of ``fn(*args)``: the best of ``rounds`` timed rounds of calls, each at least
    ``round_seconds`` long (the best: the machine's rate when the least else is running)."""
    flops = sum(counted_flops(fn, *args).values())
    fn(*args)  # warm up
    best = float("inf")
    for _ in range(rounds):
        started, calls = time.perf_counter(), 0
        while calls == 0 or time.perf_counter() - started < round_seconds:
            fn(*args)
            calls += 1
        best = min(best, (time.perf_counter() - started) / calls)
    return flops / best / 1e9, flops


def measure_throughput(threads: int | None = None) -> dict:
    """This machine's float32 matmul and conv2d throughput now, at ``threads`` torch threads (default: torch's
    count now), with the load average."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        return _throughput()
    finally:
        torch.set_num_threads(previous)


def _throughput() -> dict:
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator) for _ in range(2))
    x, w = (torch.randn(*shape, generator=generator) for shape in CONV_SHAPES)
    loadavg_start = os.getloadavg()[0]
    with torch.no_grad():
        matmul, matmul_flops = _rate(torch.mm, a, b)
        conv, conv_flops = _rate(torch.nn.functional.conv2d, x, w)
    return dict(matmul_gflops=matmul, conv_gflops=conv, matmul_op=f"torch.mm {MATMUL_SIZE}x{MATMUL_SIZE}, "
                f"{matmul_flops} FLOPs", conv_op=f"conv2d {list(CONV_SHAPES[0])} * {list(CONV_SHAPES[1])}, "
                f"{conv_flops} FLOPs", threads=torch.get_num_threads(), cpu=cpu_model(), cpu_count=os.cpu_count(),
                loadavg_start=loadavg_start, loadavg_end=os.getloadavg()[0])


# ---------------------------------------------------------------------------------------- model FLOPs
@lru_cache(maxsize=None)
def _forward_flops(model_yaml: str, input_shape: tuple[int, ...]) -> dict:
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(model_yaml), list(input_shape)).eval()
    first = next(name for name, layer in model.named_modules() if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)))
    with torch.no_grad():
        return dict(counted_flops(model, torch.zeros(1, *input_shape)),
                    first=counted_flops(model, torch.zeros(1, *input_shape), module=f"{type(model).__name__}.{first}"))


def forward_flops(run_dir: Path) -> dict[str, int] | None:
    """F: the FLOPs of one sample's forward pass through the run's model (from its config.yaml and the input
    shape its metrics.json records), split into matmul / conv / other, and ``first``: those of its first affine
    layer alone; None when the run lacks them."""
    try:
        cfg = OmegaConf.load(run_dir / "config.yaml")
        shape = tuple(int(s) for s in json.loads((run_dir / "metrics.json").read_text())["input_shape"])
    except (OSError, KeyError, ValueError):
        return None
    return _forward_flops(OmegaConf.to_yaml(cfg.model, resolve=True), shape)


def floor_seconds(flops: dict, passes: dict[str, int], throughput: dict) -> float:
    """Seconds of ``passes`` (forward_rows, backward_rows, weight_backward_rows) at F = ``flops`` per row: forward
    and input-gradient backward rows cost F, weight-update backward rows 2F less the first affine layer's F (its
    input gradient is never computed in an update); matmul and conv FLOPs each over its own rate (other FLOPs,
    elementwise, at the matmul rate)."""

    def seconds(split: dict) -> float:
        return (split["matmul"] + split["other"]) / (throughput["matmul_gflops"] * 1e9) \
            + split["conv"] / (throughput["conv_gflops"] * 1e9)

    weight = int(passes["weight_backward_rows"])
    rows = int(passes["forward_rows"]) + (int(passes["backward_rows"]) - weight) + 2 * weight
    return rows * seconds(flops) - weight * seconds(flops["first"])


@lru_cache(maxsize=None)
def _n_train(data_yaml: str) -> int | None:
    try:
        return len(load_dataset(OmegaConf.create(data_yaml)).train.y)
    except Exception:  # noqa: BLE001 - the data is not here: no formula
        return None


def formula_passes(run_dir: Path, epochs: int) -> dict[str, int] | None:
    """The training passes of ``epochs`` epochs from the run's config (see the module's docstring); None when the
    run's data set cannot be read here (its size is what the run trained on, which data.n_train only caps)."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    if not all(key in cfg for key in ("data", "perturb", "train")):
        return None
    n = _n_train(OmegaConf.to_yaml(cfg.data, resolve=True))
    if n is None:
        return None
    n, pieces = int(n), int(cfg.perturb.pieces)
    forward = search = weight = 0
    for epoch in range(epochs):
        perturbed = cfg.perturb.layers != "none" and eps_at_epoch(
            float(cfg.perturb.eps), epoch, int(cfg.train.epochs), int(cfg.perturb.ramp_steps)) > 0
        forward += n * (2 * pieces + 1 if perturbed else 1)
        search += n * (2 * pieces - 1 if perturbed else 0)
        weight += n * (2 if perturbed else 1)
    return dict(forward_rows=forward, backward_rows=search + weight, weight_backward_rows=weight)


# ------------------------------------------------------------------------------------------ the records
def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def resolve_dir(recorded: str, output_dir: Path) -> Path:
    """A run directory as a meta.json names it: absolute, relative to here, else under ``output_dir``'s runs
    (``<runs>/<name>/<hash>`` or ``<runs>/<name>/<hash>/eval/<evaluation>``)."""
    path = Path(recorded)
    if path.is_absolute() or path.exists():
        return path
    parts = path.parts
    tail = parts[parts.index("runs"):] if "runs" in parts else parts[-3:]
    return output_dir.joinpath(*tail)


def _where(marker: dict) -> dict:
    sitting = marker.get("sitting", {})
    return dict(cpu=sitting.get("cpu"), threads=sitting.get("torch_threads"),
                loadavg_start=sitting.get("loadavg_start"), loadavg_end=sitting.get("loadavg_end"))


def _counted(marker: dict) -> dict | None:
    totals = marker.get("sittings") or {}
    keys = ("forward_rows", "backward_rows", "weight_backward_rows")
    return {key: int(totals[key]) for key in keys} if all(totals.get(key) is not None for key in keys) else None


def train_stage(run_dir: Path, formula: bool = True) -> dict:
    """A run's training: seconds (and how they were recorded), passes (counted, else by formula), where."""
    marker = _json(run_dir / COMPLETE)
    if not marker:
        return dict(seconds=None, how="not finished", passes=None, passes_how=None, **_where(marker))
    log_seconds = recorded_train_seconds(run_dir)
    if marker.get("ensemble_size"):
        seconds, how = log_seconds, f"share of an ensemble of {marker['ensemble_size']} (train_log)"
    elif marker.get("sittings"):
        seconds, how = float(marker["sittings"]["seconds"]), f"{marker['sittings']['count']} sitting(s)"
    else:
        seconds, how = log_seconds, "train_log (epochs only)"
    passes, passes_how = _counted(marker), "counted"
    if passes is None:
        epochs = marker.get("epochs_trained")
        passes, passes_how = (formula_passes(run_dir, int(epochs)) if epochs and formula else None), "formula"
    return dict(seconds=seconds, how=how, passes=passes, passes_how=passes_how if passes else None,
                **_where(marker))


def eval_stage(eval_dir: Path | None) -> dict:
    """An evaluation's seconds (over all its sittings, else its marker's), passes (counted only) and where."""
    marker = _json(eval_dir / COMPLETE) if eval_dir is not None else {}
    if not marker:
        return dict(seconds=None, how="not named by the meta.json (several evaluations)" if eval_dir is None
                    else "not finished", passes=None,
                    passes_how=None, **_where(marker))
    if marker.get("sittings"):
        seconds, how = float(marker["sittings"]["seconds"]), f"{marker['sittings']['count']} sitting(s)"
    elif "seconds" in marker:
        seconds, how = float(marker["seconds"]), "marker"
    else:
        seconds, how = marker.get("sitting", {}).get("seconds"), "last sitting"
    passes = _counted(marker)
    if passes is not None and not passes["forward_rows"]:  # its work went around the model's forward pass
        passes = None
    return dict(seconds=seconds, how=how, passes=passes, passes_how="counted" if passes else None, **_where(marker))


def _eval_dir_of(run: dict, run_dir: Path, output_dir: Path) -> tuple[Path | None, str]:
    if run.get("eval_dir"):
        return resolve_dir(run["eval_dir"], output_dir), ""
    found = sorted(path for path in (run_dir / "eval").glob("*") if (path / COMPLETE).exists())
    if len(found) == 1:
        return found[0], " (its only evaluation: the meta.json does not name it)"
    return None, ""


def account(output_dir: Path | str, throughput: dict | None = None, floors: bool = True) -> dict:
    """Every figure's stages with seconds, floors and ratios, and the total (shared runs and evaluations once).
    ``throughput``: :func:`measure_throughput` (measured here when not given); ``floors=False``: the seconds
    alone (no throughput measured, no passes counted by formula, no floors)."""
    output_dir = Path(output_dir)
    metas = sorted((output_dir / "figures").glob("*.meta.json"))
    if not metas:
        raise ConfigError(f"--output-dir={output_dir} is not allowed: it has no figures/*.meta.json (make a figure "
                          "or run make reproduce-all first)")
    figures, users = [], Counter()
    for path in metas:
        meta = _json(path)
        stages = []
        for run in meta.get("runs", []):
            run_dir = resolve_dir(run["run_dir"], output_dir)
            flops = forward_flops(run_dir) if floors else None
            eval_dir, guessed = _eval_dir_of(run, run_dir, output_dir)
            for kind, stage, key in (("train", train_stage(run_dir, floors), run_dir),
                                     ("evaluate", eval_stage(eval_dir), eval_dir or run_dir / "eval" / "?")):
                users[str(key)] += 1
                stage.update(stage=kind, label=run.get("label"), experiment=run.get("experiment"),
                             key=str(key), note=guessed if kind == "evaluate" else "", flops=flops,
                             finished=_finished(key))
                stages.append(stage)
        started = _call_started(meta)
        for name, seconds in meta.get("stage_seconds", {}).items():
            if name in ("train", "evaluate"):  # those come from the runs' own records
                continue
            how = "meta.json (this call)"
            if name == "build" and seconds is not None:  # its wall time holds the work of its runs done in the call
                inside = _sum(stage["seconds"] for stage in stages if stage["finished"] is not None
                              and started is not None and stage["finished"] >= started)
                seconds, how = max(0.0, seconds - inside), f"meta.json (this call, less {inside:.1f} s of its runs)"
            stages.append(dict(stage=name, label=None, experiment=None, key=f"{path.name}:{name}", seconds=seconds,
                               how=how, passes=None, passes_how=None, note="", flops=None, cpu=None, threads=None,
                               loadavg_start=None, loadavg_end=None, finished=None))
        figures.append(dict(id=meta.get("id", path.name.split(".")[0]), meta=str(path), stages=stages))
    rates = _rates_by_threads([stage for figure in figures for stage in figure["stages"]], throughput) \
        if floors else {}
    for figure in figures:
        for stage in figure["stages"]:
            stage["shared"] = users[stage["key"]] > 1 and stage["stage"] in ("train", "evaluate")
            floor = floor_seconds(stage["flops"], stage["passes"], rates[_threads(stage)]) \
                if stage["flops"] and stage["passes"] else None
            stage["floor_seconds"] = floor
            stage["ratio"] = stage["seconds"] / floor if floor and stage["seconds"] is not None else None
            stage["slow"] = stage["ratio"] is not None and stage["ratio"] > SLOW
            del stage["flops"], stage["finished"]
        figure["seconds"] = _sum(stage["seconds"] for stage in figure["stages"])
        figure["floor_seconds"] = _sum(stage["floor_seconds"] for stage in figure["stages"])
    unique = {stage["key"]: stage for figure in figures for stage in figure["stages"]}
    seconds = {kind: _sum(stage["seconds"] for stage in unique.values() if _kind(stage) == kind)
               for kind in ("train", "evaluate", "draw")}
    total = dict(seconds=_sum(stage["seconds"] for stage in unique.values()), by_stage=seconds,
                 floor_seconds=_sum(stage["floor_seconds"] for stage in unique.values()),
                 shared=sum(1 for key, count in users.items() if count > 1), units=len(unique))
    total["ratio"] = total["seconds"] / total["floor_seconds"] if total["floor_seconds"] else None
    return dict(output_dir=str(output_dir), created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                throughput=rates.get(_threads({})), throughput_by_threads=rates, figures=figures, total=total)


def _threads(stage: dict) -> int:
    """The thread count a stage's floor is taken at: the torch threads its last sitting ran with (at most this
    machine's CPUs), else torch's count now."""
    return min(int(stage.get("threads") or torch.get_num_threads()), os.cpu_count() or 1)


def _rates_by_threads(stages: list[dict], throughput: dict | None) -> dict[int, dict]:
    """The throughput at every thread count the stages ran with and at torch's count now: ``throughput`` for each
    when given, else measured (:func:`measure_throughput`) once per count."""
    counts = sorted({_threads({})} | {_threads(stage) for stage in stages if stage["flops"] and stage["passes"]})
    return {count: throughput if throughput is not None else measure_throughput(count) for count in counts}


def _finished(path: Path | str) -> float | None:
    """When a unit of work was marked finished (its marker's modification time), None when it was not."""
    try:
        return (Path(path) / COMPLETE).stat().st_mtime
    except OSError:
        return None


def _call_started(meta: dict) -> float | None:
    """When the figure's call started: its meta's creation time less its seconds (whole seconds: a second early)."""
    try:
        created = datetime.strptime(meta["created_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        return created.timestamp() - float(meta["seconds"]) - 1.0
    except (KeyError, TypeError, ValueError):
        return None


def _kind(stage: dict) -> str:
    return stage["stage"] if stage["stage"] in ("train", "evaluate") else "draw"


def _sum(values) -> float:
    return float(sum(value for value in values if value is not None))


# ------------------------------------------------------------------------------------------------ output
def _f(value: object, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


HEADER = ("stage", "run", "seconds", "floor s", "ratio", "passes", "recorded", "where: CPU, threads, load start/end")


def stage_cells(stage: dict) -> list[str]:
    ratio = "-" if stage["ratio"] is None else f"{stage['ratio']:.1f}x" + (" (>2x)" if stage["slow"] else "")
    where = "-" if stage["cpu"] is None else \
        f"{stage['cpu']}, {stage['threads']} thr, load {_f(stage['loadavg_start'], 2)}/{_f(stage['loadavg_end'], 2)}"
    run = (stage["label"] or "") + (" (shared)" if stage["shared"] else "")
    return [stage["stage"], run or "-", _f(stage["seconds"]), _f(stage["floor_seconds"], 2), ratio,
            stage["passes_how"] or "-", stage["how"] + stage["note"], where]


def markdown(result: dict) -> str:
    """The tables as markdown: one per figure, then the total."""
    rates = result["throughput_by_threads"].values()
    t = result["throughput"]
    lines = [f"# Time accounted: {result['output_dir']}", "",
             f"Throughput measured {result['created_utc']} on {t['cpu']}; each stage's floor is taken at the thread "
             "count it ran with:", ""]
    lines += [f"- {r['threads']} thread(s), load {r['loadavg_start']:.2f}/{r['loadavg_end']:.2f}: matmul "
              f"{r['matmul_gflops']:.1f} GFLOP/s ({r['matmul_op']}), conv2d {r['conv_gflops']:.1f} GFLOP/s "
              f"({r['conv_op']})." for r in rates]
    lines.append("")
    if any(max(r["loadavg_start"], r["loadavg_end"]) > (r.get("cpu_count") or 1) for r in rates):
        lines += [f"The machine was loaded while measuring (load above its {t.get('cpu_count')} CPUs): the throughput "
                  "is below what it does when quiet, so the floors are too high and the ratios too low.", ""]
    for figure in result["figures"]:
        lines += [f"## {figure['id']}: {figure['seconds']:.1f} s (floor {figure['floor_seconds']:.2f} s)", "",
                  "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(stage_cells(stage)) + " |" for stage in figure["stages"]]
        lines.append("")
    total = result["total"]
    lines += ["## Total", "", f"{total['seconds']:.1f} s ({total['seconds'] / 3600:.2f} h): train "
              f"{total['by_stage']['train']:.1f} s, evaluate {total['by_stage']['evaluate']:.1f} s, draw/build "
              f"{total['by_stage']['draw']:.1f} s; {total['units']} units of work, {total['shared']} shared by "
              f"several figures (counted once); floor {total['floor_seconds']:.2f} s"
              + (f", ratio {total['ratio']:.1f}x" if total["ratio"] else "") + ".", ""]
    return "\n".join(lines)


def text(result: dict) -> str:
    """The tables as aligned text for the terminal."""
    out = []
    for figure in result["figures"]:
        rows = [list(HEADER)] + [stage_cells(stage) for stage in figure["stages"]]
        widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
        out.append(f"{figure['id']}: {figure['seconds']:.1f} s, floor {figure['floor_seconds']:.2f} s")
        out += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                for row in rows]
        out.append("")
    loaded = [line for line in markdown(result).splitlines() if line.startswith("The machine was loaded")]
    return "\n".join(out + loaded) + "\n" + markdown(result).split("## Total", 1)[1].strip() + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=os.environ.get("PEXP_OUTPUT", "outputs"),
                        help="the output folder of a reproduce-all (default: $PEXP_OUTPUT, else outputs)")
    parser.add_argument("--bench-dir", default=None,
                        help="where to write accounting.{json,md} (default: <output-dir>/bench)")
    args = parser.parse_args(argv)
    try:
        result = account(args.output_dir)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    for t in result["throughput_by_threads"].values():
        print(f"[accounting] {t['cpu']}, {t['threads']} thread(s): matmul {t['matmul_gflops']:.1f} GFLOP/s, conv2d "
              f"{t['conv_gflops']:.1f} GFLOP/s (load {t['loadavg_start']:.2f}/{t['loadavg_end']:.2f})")
    print(text(result))
    bench = Path(args.bench_dir) if args.bench_dir else Path(args.output_dir) / "bench"
    write_json(bench / "accounting.json", result)
    write_text(bench / "accounting.md", markdown(result))
    print(f"[accounting] wrote {bench / 'accounting.json'} and {bench / 'accounting.md'}")
    return result


if __name__ == "__main__":
    main()
