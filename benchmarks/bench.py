"""``make bench`` (``python benchmarks/bench.py``): the speed of pexp's batched pieces against their slow
references, measured in one process on the same data, printed as one table and written to ``<out>/bench.json``
(``--out``, default ``outputs/bench``).

Rows (each a ratio of ours to the reference, except the end-to-end stage times):

1. Algorithm 1 throughput (PE-net, all layers, pieces 4, batch 50): batched ``training_step`` vs the
   one-sample-at-a-time oracle ``pexp.train.reference.one_at_a_time_update``.
2. Algorithm 1 epoch cost over a plain squared-error epoch (same data, same batch size, same loop).
3. Margin search: ``minimal_perturbation`` (per-point bisection) vs foolbox's LinfPGD swept over the whole epsilon
   grid (``pexp.eval.reference.sweep_margins``): per-point forward-backward passes, wall time, agreement.
4. Tangent sensitivity: closed form vs the full mixed derivative by autograd.
5. End to end: the stages of ``make reproduce-fig2``, from the records of finished runs when present, else a
   measured slice extrapolated to the full figure (labelled so); ``--full-e2e`` times the real thing (into
   ``<out>/e2e``).
6. Threads (CPU): batched Algorithm 1 throughput with torch's default threads, with OMP_WAIT_POLICY=PASSIVE, and
   with one thread, each in a fresh process.
7. Toy ensemble: pe-fig1's twelve runs (shortened) trained together (``pexp.train.ensemble``) vs one at a time.
8. ``--all`` (hours, not run by default): ``make reproduce-all`` from scratch into ``<out>/all``, each figure's
   training, evaluation (or build) and drawing time and the total; ``--quick --all``: the ``make smoke`` configs;
   ``--figures`` picks figures.

Timings alternate between ours and the reference (so a change in the machine's load hits both) and keep the best
of several rounds; the machine's load average is recorded with the results.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import OmegaConf
from torch import nn

import accounting  # beside this script
from common import BATCH, EPS, LR, MOMENTUM, PIECES, CountingModel, pe_net, sync, timed  # beside this script
from pexp import CONF_DIR
from pexp.data import load_dataset
from pexp.eval.evaluate import eval_dir, evaluate
from pexp.eval.margin import AUTHORS_PROTOCOL, minimal_perturbation
from pexp.eval.reference import autograd_tangent_sensitivity, sweep_margins
from pexp.eval.tangent import tangent_sensitivity
from pexp.figures import FIGURES
from pexp.figures.base import make_figure
from pexp.figures.compose import compose_experiment
from pexp.losses import Loss, SquaredError
from pexp.models import AsLogits, EntryNet, build_model
from pexp.runs import training_run_dir, write_json
from pexp.train.ensemble import train_many
from pexp.train.loop import recorded_train_seconds, train, training_step
from pexp.train.optim import SummedMomentum
from pexp.train.perturb import active_layers, eps_at_epoch
from pexp.train.reference import one_at_a_time_update

HERE = Path(__file__).resolve().parent
FIG2_MINUTES_TARGET = 45.0

# full / quick sizes
SIZES = {
    False: dict(model_size=2, reference_samples=50, ours_samples=1000, rounds=3, margin_points=24,
                margin_grid=(0.001, 0.1), margin_steps=40, margin_train=2000, tangent_inputs=24, bracket_points=500,
                slice_samples=2000, slice_margin_points=50, ensemble_epochs=2000, ensemble_rounds=2),
    True: dict(model_size=1, reference_samples=2, ours_samples=50, rounds=1, margin_points=3,
               margin_grid=(0.02, 0.1), margin_steps=3, margin_train=100, tangent_inputs=2, bracket_points=4,
               slice_samples=50, slice_margin_points=1, ensemble_epochs=100, ensemble_rounds=1),
}


# --------------------------------------------------------------------------------------------------- helpers
MARKER = ".made-by-bench"  # in every folder the bench makes from scratch (and so may remove again)


def foreign_dir(path: Path) -> bool:
    """Whether ``path`` holds files the bench did not put there: it then never removes it."""
    return path.exists() and any(path.iterdir()) and not (path / MARKER).exists()


def fresh_dir(path: Path) -> Path:
    """An empty folder at ``path`` for a from-scratch measurement: one the bench made before is removed first."""
    assert not foreign_dir(path), path  # main refuses these before any work
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / MARKER).touch()
    return path


def row(name: str, ours: float | None, reference: float | None, unit: str, ratio: float | None,
        target: str | None, met: bool | None, notes: str = "", **extra: object) -> dict:
    return dict(name=name, ours=ours, reference=reference, unit=unit, ratio=ratio, target=target, met=met,
                notes=notes, **extra)


def machine_info(device: torch.device) -> dict:
    info = dict(cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                torch_interop_threads=torch.get_num_interop_threads(), loadavg_start=list(os.getloadavg()),
                device=str(device), torch=torch.__version__, python=platform.python_version(),
                platform=platform.platform(), processor=platform.processor() or platform.machine(),
                omp_num_threads=os.environ.get("OMP_NUM_THREADS"))
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
    return info


def load_data(overrides: Sequence[str], n_train: int, n_test: int) -> tuple[object, str]:
    """The cifar2 data of the figure when readable with ``overrides``, else the synthetic stand-in."""
    for name in ("cifar2", "synthetic_cifar2"):
        # a bench never downloads; the stand-in takes none of the real data's options
        extra = ["data.download=false"] if name == "cifar2" else []
        kept = [o for o in overrides if name == "cifar2" or not o.lstrip("+~").startswith("data.")]
        cfg = compose_experiment("richness_fig2_all", [*kept, f"data={name}", f"data.n_train={n_train}",
                                                       f"data.n_test={n_test}", *extra])
        try:
            return load_dataset(cfg.data), name
        except Exception as error:  # noqa: BLE001 - no real data here: the stand-in is fine for timings
            print(f"[bench] {name} not available ({type(error).__name__}: {str(error)[:120]}); "
                  "using the synthetic stand-in")
    raise RuntimeError("no data")


# ------------------------------------------------------------------------------------- rows 1-2: Algorithm 1
def algorithm1_rows(x: torch.Tensor, y: torch.Tensor, sizes: dict, device: torch.device) -> list[dict]:
    """Interleaved rounds on the same samples: the oracle on ``reference_samples``, then a batched epoch slice
    of ``ours_samples`` with Algorithm 1 and without perturbations."""
    loss = SquaredError()
    base = pe_net(sizes["model_size"], x.shape[1:]).to(device)
    x, y = x.to(device), y.to(device)
    active, none = active_layers(base, "all"), [False] * len(base.entry_shapes)

    oracle = copy.deepcopy(base)
    buffers = [torch.zeros_like(p) for p in oracle.parameters()]
    batched, plain = copy.deepcopy(base), copy.deepcopy(base)
    opt_batched = SummedMomentum(batched.parameters(), lr=LR, momentum=MOMENTUM)
    opt_plain = SummedMomentum(plain.parameters(), lr=LR, momentum=MOMENTUM)

    def reference() -> None:
        for first in range(0, sizes["reference_samples"], BATCH):
            last = min(first + BATCH, sizes["reference_samples"])
            one_at_a_time_update(oracle, buffers, x[first:last], y[first:last], EPS, PIECES, active, LR, MOMENTUM)

    def epoch_slice(model: EntryNet, optimizer: torch.optim.Optimizer, eps: float, on: list[bool],
                    seed: int) -> None:
        n = sizes["ours_samples"]  # as in pexp.train.loop: a seeded permutation, then batches of 50
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(device)
        for first in range(0, n, BATCH):
            index = order[first:first + BATCH]
            training_step(model, optimizer, "sum", x[index], y[index], loss, eps, PIECES, on)

    epoch_slice(batched, opt_batched, EPS, active, 0)  # warm-up (allocator, oneDNN kernels)
    epoch_slice(plain, opt_plain, 0.0, none, 0)
    times: dict[str, list[float]] = {"reference": [], "batched": [], "plain": []}
    for round_ in range(sizes["rounds"]):
        times["reference"].append(timed(reference, device) / sizes["reference_samples"])
        times["batched"].append(timed(lambda: epoch_slice(batched, opt_batched, EPS, active, round_ + 1),
                                      device) / sizes["ours_samples"])
        for _ in range(3):  # the plain slice is short: repeat it, keep the best
            times["plain"].append(timed(lambda: epoch_slice(plain, opt_plain, 0.0, none, round_ + 1),
                                        device) / sizes["ours_samples"])
        print(f"[bench] Algorithm 1 round {round_ + 1}: oracle {1 / times['reference'][-1]:.1f}/s, batched "
              f"{1 / times['batched'][-1]:.0f}/s, plain {1 / min(times['plain'][-3:]):.0f}/s, "
              f"load {os.getloadavg()[0]:.2f}")
    best = {key: min(values) for key, values in times.items()}
    median = {key: statistics.median(values) for key, values in times.items()}
    speedup = best["reference"] / best["batched"]
    cost = best["batched"] / best["plain"]
    common = (f"PE-net size {sizes['model_size']}, all layers, eps {EPS}, pieces {PIECES}, batch {BATCH}, "
              f"{str(x.dtype).replace('torch.', '')} on {device.type}; best of {sizes['rounds']} interleaved rounds")
    return [
        row("1. Algorithm 1 throughput: batched vs one-at-a-time", 1 / best["batched"], 1 / best["reference"],
            "samples/s", speedup, ">= 8x", speedup >= 8,
            f"{common}; oracle on {sizes['reference_samples']} samples/round, batched on "
            f"{sizes['ours_samples']}; median ratio {median['reference'] / median['batched']:.1f}x",
            median_ratio=median["reference"] / median["batched"]),
        row("2. Algorithm 1 epoch cost over plain squared error", best["batched"] * sizes["ours_samples"],
            best["plain"] * sizes["ours_samples"], f"s per {sizes['ours_samples']} samples", cost, "<= 8x",
            cost <= 8, f"{common}; naive: 2 x (pieces + 1) = {2 * (PIECES + 1)}x; plain "
            f"{1 / best['plain']:.0f} samples/s; median ratio {median['batched'] / median['plain']:.2f}x",
            median_ratio=median["batched"] / median["plain"]),
    ]


# ------------------------------------------------------------------------------------ row 3: margin search
def bracket_row(logits: torch.nn.Module, data: object, source: str, sizes: dict, device: torch.device) -> dict:
    """The accurate default on many test points (target: 2,000 CIFAR points in <= 2 minutes), with the
    one-step-below probe (``bracket``) against plain bisection: seconds per 2,000 points and agreement."""
    n = sizes["bracket_points"]
    x, y = data.test.x[:n].to(device), data.test.y[:n].to(device)
    found, seconds = {}, {}
    for bracket in (True, False):
        torch.manual_seed(0)
        started = time.perf_counter()
        found[bracket] = minimal_perturbation(logits, x, y, eps_max=0.3, resolution=0.001, bracket=bracket)
        seconds[bracket] = time.perf_counter() - started
    torch.manual_seed(0)  # the old default, for "how much slower is the accurate search": the authors' protocol
    started = time.perf_counter()
    minimal_perturbation(logits, x, y, eps_max=0.3, resolution=0.001, **AUTHORS_PROTOCOL)
    seconds["authors"] = time.perf_counter() - started
    a, b = found[True], found[False]
    gap = torch.where(torch.isinf(a) & torch.isinf(b), torch.zeros_like(a), (a - b).abs())
    fraction = float((gap <= 0.001 * (1 + 1e-3)).float().mean())
    per_2000 = seconds[True] / n * 2000
    return row("3c. Margin search, accurate default (grid 0.001..0.3): with the one-step-below probe vs plain "
               "bisection", per_2000, seconds[False] / n * 2000, "s per 2,000 points", seconds[True] / seconds[False],
               "<= 120 s per 2,000 points; 99% within one step of plain bisection",
               per_2000 <= 120 and fraction >= 0.99,
               f"first {n} {source} test points (the same short-trained PE-net as 3a/3b); {100 * fraction:.1f}% "
               f"within one step, largest gap {float(gap.max()):.4g}; censored {int(torch.isinf(a).sum())}; the "
               f"authors' protocol (the old default) on the same points: {seconds['authors'] / n * 2000:.1f} s per "
               f"2,000 ({seconds[True] / seconds['authors']:.2f}x of it)",
               within_one_step=fraction, seconds=dict(probe=seconds[True], plain=seconds[False],
                                                      authors=seconds["authors"]))


def margin_rows(data: object, source: str, sizes: dict, device: torch.device) -> list[dict]:
    loss = SquaredError()
    model = pe_net(sizes["model_size"], data.input_shape, seed=1).to(device)
    optimizer = SummedMomentum(model.parameters(), lr=LR, momentum=MOMENTUM)
    x_train, y_train = data.train.x[:sizes["margin_train"]].to(device), data.train.y[:sizes["margin_train"]].to(device)
    for first in range(0, len(y_train), BATCH):  # one short plain epoch: margins of a few hundredths
        training_step(model, optimizer, "sum", x_train[first:first + BATCH], y_train[first:first + BATCH], loss,
                      0.0, PIECES, [False] * len(model.entry_shapes))
    logits = AsLogits(model.eval(), 0.5)
    with torch.no_grad():
        right = (logits(data.test.x.to(device)).argmax(1) == data.test.y.to(device)).cpu()
    chosen = torch.nonzero(right).flatten()[:sizes["margin_points"]]  # correctly classified: margins > 0
    x, y = data.test.x[chosen].to(device), data.test.y[chosen].to(device)
    step, top = sizes["margin_grid"]
    epsilons = [step * k for k in range(1, round(top / step) + 1)]
    counted = CountingModel(logits)
    rows = []
    protocols = {"a": ("the authors' protocol (random start, cross-entropy, eps/30)",
                       dict(random_start=True, objective="ce", rel_stepsize=1 / 30)),
                 "b": ("the accurate default (zero start, margin objective, eps/25)",
                       dict(random_start=False, objective="margin", rel_stepsize=1 / 25))}
    for letter, (label, protocol) in protocols.items():
        settings = dict(steps=sizes["margin_steps"], **protocol)
        torch.manual_seed(0)
        counted.reset()
        started = time.perf_counter()
        # the bisection alone (no FMN first estimate, no APGD stage): the row compares it with the same PGD swept
        ours = minimal_perturbation(counted, x, y, eps_max=top, resolution=step, first_estimate=None, apgd=False,
                                    **settings)
        ours_seconds, ours_passes = time.perf_counter() - started, (counted.with_gradient, counted.without_gradient)
        torch.manual_seed(0)
        counted.reset()
        started = time.perf_counter()
        sweep = sweep_margins(counted, x, y, epsilons, **settings)
        sweep_seconds, sweep_passes = time.perf_counter() - started, (counted.with_gradient, counted.without_gradient)
        # ours is the norm of the smallest successful perturbation found (<= its grid epsilon); sweep is the
        # smallest successful grid epsilon. Agreement: both inf, or within one grid step.
        both_inf = torch.isinf(ours) & torch.isinf(sweep)
        gap = torch.where(both_inf, torch.zeros_like(ours), (ours - sweep).abs())
        agree = gap <= step * (1 + 1e-3)
        fraction = float(agree.float().mean())
        per_point = (ours_passes[0] / len(y), sweep_passes[0] / len(y))
        ratio = per_point[0] / per_point[1]
        finite = torch.isfinite(sweep)
        rows.append(row(
            f"3{letter}. Margin search, {label}: bisection vs the same attack swept over the grid",
            per_point[0], per_point[1], "fwd-bwd passes per point", ratio, "<= 0.1x passes; 99% within one step",
            ratio <= 0.1 and fraction >= 0.99,
            f"{len(y)} correctly classified {source} test points, PE-net size {sizes['model_size']} after one short "
            f"plain epoch; grid {step:g}..{top:g} ({len(epsilons)} eps), {settings['steps']} steps; "
            f"wall {ours_seconds:.1f}s vs {sweep_seconds:.1f}s ({ours_seconds / sweep_seconds:.3f}x); "
            f"{100 * fraction:.1f}% within one step, largest gap {float(gap.max()):.4g}; sweep margins finite for "
            f"{int(finite.sum())}/{len(y)} (median {float(sweep[finite].median()) if finite.any() else math.nan:.3f})",
            wall_seconds=dict(ours=ours_seconds, reference=sweep_seconds),
            checks_per_point=dict(ours=ours_passes[1] / len(y), reference=sweep_passes[1] / len(y)),
            within_one_step=fraction, largest_gap=float(gap.max()),
            margins=dict(ours=ours.tolist(), reference=sweep.tolist())))
        print(f"[bench] margins ({label}): {per_point[0]:.0f} vs {per_point[1]:.0f} passes per point, "
              f"{ours_seconds:.1f}s vs {sweep_seconds:.1f}s, {100 * fraction:.1f}% within one step")
    rows.append(bracket_row(logits, data, source, sizes, device))
    return rows


# ------------------------------------------------------------------------------------------ row 4: tangent
def tangent_row(sizes: dict, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(dict(name="mlp", widths=[32, 32, 32], outputs=3)), (1, 8, 8)).double()
    x = torch.randn(sizes["tangent_inputs"], 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cpu = torch.device("cpu")  # autograd's mixed derivative is small here; both on CPU in float64
    expected_box, closed_box = [], []
    reference_seconds = min(timed(lambda: expected_box.append(autograd_tangent_sensitivity(model, x)[0]), cpu)
                            for _ in range(2))
    closed_seconds = min(timed(lambda: closed_box.append(tangent_sensitivity(model, x, per_layer=True)), cpu)
                         for _ in range(5))
    expected, closed = expected_box[-1], closed_box[-1]
    relative = float(((closed - expected).abs() / expected.abs().clamp(min=1e-300)).max())
    agree = bool(torch.allclose(closed, expected, rtol=1e-5, atol=1e-12))
    speedup = reference_seconds / closed_seconds
    return row("4. Tangent sensitivity: closed form vs autograd", len(x) / closed_seconds,
               len(x) / reference_seconds, "inputs/s", speedup, "agree to rtol 1e-5 (float64)", agree,
               f"ReLU MLP 64-32-32-32-3, {len(x)} inputs, float64 on CPU; per-layer values; largest relative "
               f"difference {relative:.2g}", largest_relative_difference=relative)


# --------------------------------------------------------------------------------------- row 5: end to end
FIG2_RUNS = {"first": "richness_fig2_first", "all": "richness_fig2_all"}


def _recorded_eval_seconds(out: Path) -> tuple[float, str]:
    """Seconds of a finished margin evaluation: from its COMPLETE marker when recorded there, else the span from
    its lock file's creation to its last split file (file times)."""
    info = json.loads((out / "COMPLETE").read_text() or "{}")
    if "seconds" in info:
        return float(info["seconds"]), "recorded"
    ends = [(out / f"{split}.csv").stat().st_mtime for split in ("train", "test") if (out / f"{split}.csv").exists()]
    return max(ends) - (out / ".lock").stat().st_mtime, "file times"


def end_to_end_rows(overrides: Sequence[str], sizes: dict, device: torch.device, full: Path | None) -> list[dict]:
    """``full``: the folder to train, evaluate and draw richness-fig2 in from scratch (``--full-e2e``)."""
    configs = {label: compose_experiment(name, ["eval=margin", *overrides]) for label, name in FIG2_RUNS.items()}
    if full is not None:
        return _full_end_to_end(overrides, device, full)
    runs = {label: training_run_dir(cfg) for label, cfg in configs.items()}
    evals = {label: eval_dir(runs[label], configs[label].eval) for label in configs}
    if all(run.complete for run in runs.values()) and all(out.complete for out in evals.values()):
        return _recorded_end_to_end(configs, runs, evals, overrides)
    return _extrapolated_end_to_end(configs, sizes, device)


def _stage_rows(stages: dict[str, float], how: str, notes: dict[str, str]) -> list[dict]:
    rows = [row(f"5. End to end ({how}): {stage}", seconds / 60, None, "min", None, None, None, notes.get(stage, ""))
            for stage, seconds in stages.items()]
    total = sum(stages.values()) / 60
    rows.append(row(f"5. End to end ({how}): make reproduce-fig2, total", total, FIG2_MINUTES_TARGET, "min",
                    total / FIG2_MINUTES_TARGET, f"<= {FIG2_MINUTES_TARGET:g} min", total <= FIG2_MINUTES_TARGET,
                    notes.get("total", "")))
    return rows


def _recorded_end_to_end(configs: dict, runs: dict, evals: dict, overrides: Sequence[str]) -> list[dict]:
    stages, notes = {}, {}
    for label in configs:
        stages[f"train {label}"] = recorded_train_seconds(runs[label].path)
        metrics = json.loads((runs[label] / "metrics.json").read_text())
        notes[f"train {label}"] = (f"{runs[label].path} (train_log.csv: {metrics.get('epochs_trained', 40)} epochs, "
                                   f"{metrics['seconds_per_epoch']:.1f} s/epoch mean; data {metrics['data']})")
        stages[f"margins {label}"], how = _recorded_eval_seconds(evals[label].path)
        notes[f"margins {label}"] = f"{evals[label].path} ({how})"
    with tempfile.TemporaryDirectory() as figures_dir:  # reads the finished runs; writes only to a temp dir
        started = time.perf_counter()
        make_figure(FIGURES["richness-fig2"], list(overrides), figures_dir, progress=False)
        stages["figure"] = time.perf_counter() - started
    notes["figure"] = "measured now (runs and margins reused; writes to a temporary directory)"
    notes["total"] = "recorded per-epoch training times exclude the per-epoch error checks and checkpoints"
    return _stage_rows(stages, "recorded runs", notes)


def _extrapolated_end_to_end(configs: dict, sizes: dict, device: torch.device) -> list[dict]:
    """Time a slice of each stage at full CIFAR size on the synthetic stand-in and scale it to the figure."""
    stages, notes = {}, {}
    n_slice = sizes["slice_samples"]
    for label, cfg in configs.items():
        cfg = copy.deepcopy(cfg)
        OmegaConf.update(cfg, "data", OmegaConf.load(Path(CONF_DIR) / "data/synthetic_cifar2.yaml"),
                         merge=False)
        data = load_dataset(cfg.data)
        torch.manual_seed(int(cfg.seed))
        model = build_model(cfg.model, data.input_shape, cfg.init).to(device)
        optimizer = SummedMomentum(model.parameters(), cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay)
        active = active_layers(model, cfg.perturb.layers)
        x, y = data.train.x[:n_slice].to(device), data.train.y[:n_slice].to(device)
        epochs, n = int(cfg.train.epochs), len(data.train.y)
        schedule = [eps_at_epoch(cfg.perturb.eps, e, epochs, int(cfg.perturb.ramp_steps)) for e in range(epochs)]
        batch = int(cfg.train.batch_size)
        per_sample, loss = {}, Loss.from_config(cfg.loss)
        for eps in sorted(set(schedule)):  # eps 0 takes the clean shortcut; every eps > 0 costs the same
            def slice_(eps: float = eps) -> None:
                for first in range(0, n_slice, batch):
                    training_step(model, optimizer, "sum", x[first:first + batch], y[first:first + batch], loss,
                                  eps, int(cfg.perturb.pieces), active)
            if eps > 0 and any(e > 0 for e in per_sample):
                per_sample[eps] = next(v for e, v in per_sample.items() if e > 0)
                continue
            slice_()  # warm-up: the first batches of a new shape pay for kernel set-up
            per_sample[eps] = timed(slice_, device) / n_slice
        stages[f"train {label}"] = sum(per_sample[eps] * n for eps in schedule)
        notes[f"train {label}"] = (f"extrapolated: {n_slice} samples timed per eps stage, x {n} samples x "
                                   f"{epochs} epochs (ramp {sorted(set(schedule))})")
        points = sizes["slice_margin_points"]
        n_eval = min(cfg.eval.n_train or n, n) + min(cfg.eval.n_test or len(data.test.y), len(data.test.y))
        logits = AsLogits(model.eval(), loss.decision_threshold)
        seconds = timed(lambda: minimal_perturbation(
            logits, data.test.x[:points], data.test.y[:points], eps_max=cfg.eval.eps_max,
            resolution=cfg.eval.resolution, steps=cfg.eval.steps, rel_stepsize=cfg.eval.rel_stepsize,
            random_start=cfg.eval.random_start), device)
        stages[f"margins {label}"] = seconds / points * n_eval
        notes[f"margins {label}"] = (f"extrapolated: {points} points timed x {n_eval}; model after {n_slice} "
                                     "training samples only, so margins (and costs) differ from the trained run's")
    stages["figure"] = 5.0
    notes["figure"] = "assumed (reading CSVs and plotting: seconds)"
    notes["total"] = "EXTRAPOLATION from measured slices on the synthetic stand-in at full CIFAR-10 size"
    return _stage_rows(stages, "extrapolated", notes)


def _full_end_to_end(overrides: Sequence[str], device: torch.device, root: Path) -> list[dict]:
    """Train, evaluate and draw richness-fig2 from scratch under ``root`` (see ``fresh_dir``)."""
    fresh_dir(root)
    overrides = [*overrides, f"paths.output_dir={root}", "train.progress=false"]
    stages = {}
    for label, name in FIG2_RUNS.items():
        cfg = compose_experiment(name, ["eval=margin", *overrides])
        started = time.perf_counter()
        run = train(cfg)
        stages[f"train {label}"] = time.perf_counter() - started
        started = time.perf_counter()
        evaluate(run, cfg.eval, str(device), progress=False)
        stages[f"margins {label}"] = time.perf_counter() - started
    started = time.perf_counter()
    make_figure(FIGURES["richness-fig2"], overrides, root / "figures", str(device), progress=False)
    stages["figure"] = time.perf_counter() - started
    return _stage_rows(stages, "measured now, from scratch", {"total": f"runs under {root}"})


# ------------------------------------------------------------------------------------------ row 6: threads
THREAD_SETTINGS = {
    "torch default threads, OpenMP default wait": {"OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": None},
    "torch default threads, OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": None},
    "1 thread": {"OMP_NUM_THREADS": "1"},
}


def threads_row(sizes: dict) -> dict:
    """Batched Algorithm 1 throughput under three thread settings, each in a fresh process (OpenMP reads its
    environment once). Busy-waiting OpenMP threads collapse when other processes share the cores."""
    samples = 2 * BATCH if sizes is SIZES[True] else 10 * BATCH
    results = {}
    for label, env in THREAD_SETTINGS.items():
        child = {**os.environ, **env}
        done = subprocess.run([sys.executable, str(HERE / "throughput_probe.py"), str(sizes["model_size"]),
                               str(samples)], capture_output=True, text=True, timeout=900,
                              env={key: value for key, value in child.items() if value is not None})
        results[label] = float(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
        print(f"[bench] threads: {label}: {results[label]} samples/s (load {os.getloadavg()[0]:.2f})")
    default = results[next(iter(THREAD_SETTINGS))]
    best = max((value, label) for label, value in results.items() if value is not None)
    return row("6. Threads: batched Algorithm 1 throughput, best setting vs default", best[0], default,
               "samples/s", best[0] / default if default else None, None, None,
               f"best: {best[1]}; " + "; ".join(f"{label}: {value:.0f}/s" for label, value in results.items()
                                                if value is not None) + f" (load {os.getloadavg()[0]:.2f})",
               settings=results)


# -------------------------------------------------------------------------------- row 7: the toy ensemble
def ensemble_row(sizes: dict, device: torch.device) -> dict:
    """pe-fig1's twelve runs (six seeds, two losses), shortened to ``ensemble_epochs``, trained one at a time by the
    loop and together by the ensemble, each into a fresh temporary output folder; alternating, best of
    ``ensemble_rounds``. Both ways go through the same run-directory writing (logs, checkpoints, final files)."""
    figure, epochs = FIGURES["pe-fig1"], sizes["ensemble_epochs"]
    times: dict[str, list[float]] = {"separate": [], "ensemble": []}
    differences = []
    for _ in range(sizes["ensemble_rounds"]):
        weights = {}
        for how in ("separate", "ensemble"):
            with tempfile.TemporaryDirectory() as root:
                cfgs = [compose_experiment(spec.experiment, [*spec.overrides, f"paths.output_dir={root}",
                                                             f"train.epochs={epochs}", "train.progress=false",
                                                             f"device={device.type}"])
                        for spec in figure.runs.values()]
                started = time.perf_counter()
                runs = [train(cfg) for cfg in cfgs] if how == "separate" else train_many(cfgs)
                sync(device)
                times[how].append(time.perf_counter() - started)
                weights[how] = [torch.load(run / "model.pt", weights_only=False)["state_dict"] for run in runs]
        differences.append(max(float((a[key] - b[key]).abs().max()) for a, b in zip(weights["separate"],
                                                                                     weights["ensemble"])
                               for key in a))
        print(f"[bench] ensemble: separate {times['separate'][-1]:.1f}s, together {times['ensemble'][-1]:.1f}s "
              f"(load {os.getloadavg()[0]:.2f})")
    best = {how: min(values) for how, values in times.items()}
    ratio = best["separate"] / best["ensemble"]
    return row("7. Toy ensemble: pe-fig1's 12 runs trained together vs one at a time", best["ensemble"],
               best["separate"], f"s for {epochs} epochs", ratio, ">= 10x", ratio >= 10,
               f"{len(figure.runs)} runs (2-20-1 net, 16 points, momentum SGD), {epochs} of their 60,000 epochs, "
               f"wall time including each run's files; best of {sizes['ensemble_rounds']} alternating rounds; "
               f"largest weight difference {max(differences):.2g}; torch threads {torch.get_num_threads()}, "
               f"load {os.getloadavg()[0]:.2f}", largest_weight_difference=max(differences))


# --------------------------------------------------------------------- row 8: make reproduce-all from scratch
ALL_HOURS_TARGET = 2.0
TOY_FIGURES = ("pe-fig1", "pe-fig2", "offmanifold-fig2", "offmanifold-fig3", "offmanifold-fig5", "offmanifold-fig6")
TOY_MINUTES_TARGET = 2.0  # each toy figure from scratch


def reproduce_all_script() -> object:
    """``scripts/reproduce_all.py`` of this checkout (``make reproduce-all``), loaded as a module: its figure
    commands and the runner that makes them."""
    spec = importlib.util.spec_from_file_location("reproduce_all", HERE.parent / "scripts" / "reproduce_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def reproduce_all_rows(figures: Sequence[str] | None, smoke: bool, overrides: Sequence[str],
                       root: Path) -> list[dict]:
    """Every figure (or ``figures``) made from scratch, as ``make reproduce-all`` makes them (one process per
    figure), into ``root`` (see ``fresh_dir``); each figure's training, evaluation (or build) and drawing wall
    seconds from its meta.json, and the total. ``smoke``: the ``make smoke`` configs."""
    reproduce_all = reproduce_all_script()
    fresh_dir(root)
    ids = list(figures or FIGURES)
    commands = reproduce_all.figure_commands(ids, smoke, [*overrides, f"paths.output_dir={root}",
                                                          "train.progress=false"])
    walls: dict[str, float] = {}

    def timed_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        began = time.perf_counter()
        done = subprocess.run(argv, **kwargs)
        walls[next((a[4:] for a in argv if a.startswith("fig=")), "report")] = time.perf_counter() - began
        return done

    started = time.perf_counter()
    # the report is not timed
    failed = set(reproduce_all.run_all(commands, [sys.executable, "-c", "pass"], run=timed_run))
    total = time.perf_counter() - started
    rows = []
    for figure_id in ids:
        meta_path = root / "figures" / f"{figure_id}.meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() and figure_id not in failed else {}
        stages = meta.get("stage_seconds", {})
        minutes, toy = walls.get(figure_id, math.nan) / 60, figure_id in TOY_FIGURES
        rows.append(row(f"8. reproduce-all from scratch{' (smoke)' if smoke else ''}: {figure_id}",
                        minutes, TOY_MINUTES_TARGET if toy else None, "min",
                        minutes / TOY_MINUTES_TARGET if toy else None, f"<= {TOY_MINUTES_TARGET:g} min" if toy else None,
                        bool(minutes <= TOY_MINUTES_TARGET and meta) if toy else None,
                        ("FAILED; " if not meta else "") + ", ".join(
                            f"{stage} {seconds / 60:.2f}" for stage, seconds in stages.items())
                        + f" min of {meta.get('seconds', math.nan) / 60:.2f} in the figure; the rest is the process "
                          "(start-up, imports)", stage_seconds=stages, figure_seconds=meta.get("seconds")))
    hours = total / 3600
    rows.append(row(f"8. reproduce-all from scratch{' (smoke)' if smoke else ''}: total ({len(ids)} figures)",
                    total / 60, ALL_HOURS_TARGET * 60, "min", hours / ALL_HOURS_TARGET,
                    f"<= {ALL_HOURS_TARGET:g} h", hours <= ALL_HOURS_TARGET and not failed,
                    f"wall time of the {len(ids)} figure processes under {root}; failed: "
                    f"{', '.join(sorted(failed)) or 'none'}; load {os.getloadavg()[0]:.2f}"))
    return rows


# ------------------------------------------------------------------------------------------------- output
def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(rows: list[dict]) -> str:
    header = ("row", "ours", "reference", "unit", "ratio", "target", "met")
    lines = [[r["name"], _fmt(r["ours"]), _fmt(r["reference"]), r["unit"],
              "-" if r["ratio"] is None else f"{r['ratio']:.3g}x", r["target"] or "-", _fmt(r["met"])] for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    fmt = " | ".join(f"{{:{w}}}" for w in widths)
    out = [fmt.format(*header), "-+-".join("-" * w for w in widths), *(fmt.format(*line) for line in lines)]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds): checks the bench runs")
    parser.add_argument("--full-e2e", action="store_true",
                        help="row 5: train, evaluate and draw richness-fig2 from scratch into <out>/e2e "
                             "(about 30 min here)")
    parser.add_argument("--out", default="outputs/bench", type=Path,
                        help="folder of the results: bench.json, and e2e/ (--full-e2e) and all/ (row 8), each made "
                             "from scratch (default: %(default)s)")
    parser.add_argument("--runs-from", default=None,
                        help="pexp output folder holding finished richness-fig2 runs for row 5 "
                             "(default: paths.output_dir, i.e. $PEXP_OUTPUT or ./outputs); only read")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    parser.add_argument("--rows", default="1,2,3,4,5,6,7", help="which rows to run, e.g. 1,2")
    parser.add_argument("--all", action="store_true",
                        help="what the figures of a finished reproduce-all took, summed from the seconds every run "
                             "and evaluation recorded (reused ones with theirs), beside each stage's compute floor; "
                             "reads --runs-from (default $PEXP_OUTPUT or ./outputs), writes <out>/accounting.{json,md}")
    parser.add_argument("--figures", default=None, help="row 8 (make reproduce-all from scratch into <out>/all, "
                                                        "timed; hours): only these figure ids (comma-separated)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the data / runs, e.g. "
                                                      "data.verify_checksums=false")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out.suffix == ".json":
        parser.error(f"--out={args.out} is a folder (bench.json, e2e/ and all/ go in it), not a .json file")
    if args.all:
        return accounting.main(["--output-dir", args.runs_from or os.environ.get("PEXP_OUTPUT") or "outputs",
                                "--bench-dir", str(out)])
    wanted = {int(part) for part in args.rows.split(",") if part}
    scratch = {key: out / key for key, used in (("e2e", args.full_e2e and 5 in wanted),
                                                 ("all", 8 in wanted)) if used}
    for path in scratch.values():
        if foreign_dir(path):
            parser.error(f"{path} holds files the bench did not make: remove it or pass another --out")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    sizes = SIZES[args.quick]
    overrides = list(args.overrides) + ([f"paths.output_dir={args.runs_from}"] if args.runs_from else [])
    result = dict(machine=machine_info(device), mode="quick" if args.quick else "full", sizes=sizes, rows=[])
    started = time.perf_counter()
    data, source = load_data(args.overrides, max(sizes["ours_samples"], sizes["margin_train"], 500), 2000)
    if wanted & {1, 2}:
        result["rows"] += algorithm1_rows(data.train.x, data.train.y, sizes, device)
    if 3 in wanted:
        result["rows"] += margin_rows(data, source, sizes, device)
    if 4 in wanted:
        result["rows"].append(tangent_row(sizes, device))
    if 5 in wanted:
        result["rows"] += end_to_end_rows(overrides, sizes, device, scratch.get("e2e"))
    if 6 in wanted and device.type == "cpu":
        result["rows"].append(threads_row(sizes))
    if 7 in wanted:
        result["rows"].append(ensemble_row(sizes, device))
    if 8 in wanted:
        result["rows"] += reproduce_all_rows(args.figures.split(",") if args.figures else None, args.quick,
                                             args.overrides, scratch["all"])
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    result["seconds"] = time.perf_counter() - started
    result["data"] = source
    print()
    print(table(result["rows"]))
    load = result["machine"]
    print(f"\n{load['cpu_count']} CPUs, {load['torch_threads']} torch threads, device {device}; load average "
          f"{load['loadavg_start'][0]:.2f} at start, {load['loadavg_end'][0]:.2f} at end; {result['seconds']:.0f}s")
    write_json(out / "bench.json", result)
    print(f"[bench] wrote {out / 'bench.json'}")
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
