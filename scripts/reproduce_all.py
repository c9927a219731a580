"""Make every figure ``pexp.figures.FIGURES`` knows, then the report page (``make reproduce-all``, ``make smoke``).

    python scripts/reproduce_all.py [--smoke] [--dry-run] [hydra overrides ...]

Each figure is its own ``python -m pexp.figures fig=<id> ...`` process (finished runs are reused). A failing
figure does not stop the others: the failures are listed at the end and the exit status is 1. ``--smoke`` makes
every figure from tiny configs under outputs/smoke (the CI run). Extra overrides reach every figure.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra.errors import OverrideParseException  # noqa: E402

from pexp.cli import hydra_error_line  # noqa: E402
from pexp.overrides import Overrides, python_command  # noqa: E402

SMOKE = ["scale=smoke", "paths.output_dir=outputs/smoke", "train.progress=false"]
SYNTHETIC = ["data=synthetic_cifar2"]  # the CIFAR-10 figures: the offline stand-in
SHORT = ["train.epochs=3000", "train.log_every=1000", "train.checkpoint_every=1000"]  # toys, shortened
# Per-figure overrides of the smoke run (figures not listed get SMOKE alone), and the toys that run faster on
# one thread.
SMOKE_EXTRA: dict[str, list[str]] = {
    "richness-fig1": SYNTHETIC, "richness-fig2": SYNTHETIC, "richness-fig3": SYNTHETIC,
    "pe-multiclass": ["synthetic=true", "data.n_train=500", "data.n_test=200", "train.epochs=4"], "pe-fig4": SYNTHETIC, "pe-fig5": SYNTHETIC,
    "pe-fig6": SYNTHETIC, "pe-fig1": SHORT, "pe-fig2": SHORT,
    "offmanifold-fig2": ["train.epochs=1000"], "offmanifold-fig6": ["train.epochs=1000"],
    "offmanifold-fig3": ["train.epochs=300", "++eval.surface_grid=11"],
    "offmanifold-fig5": ["train.epochs=300", "++eval.surface_grid=11"],
    "offmanifold-fig1": ["synthetic=true"],
    # keys the default config lacks (the fig4 experiments have them) take ++, or the command-line check refuses them
    "offmanifold-fig4": ["synthetic=true", "++model.widths=[64,64]", "train.epochs=3", "++eval.n_points=20",
                         "eval.steps=400", "++sweep.factors=[1,3]", "++sweep.seeds=[1]"],
    **{f"tangent-{name}": ["synthetic=true", "train.epochs=3", "eval.n_train=200", "eval.n_test=200"]
       for name in ("fig1", "fig3", "fig4", "table2")},
}
ONE_THREAD = {"tangent-fig1", "tangent-fig3", "tangent-fig4", "tangent-table2", "pe-fig1", "pe-fig2", "offmanifold-fig2", "offmanifold-fig3", "offmanifold-fig5", "offmanifold-fig6"}

Command = tuple[str, list[str], dict[str, str]]


def figure_commands(ids: Sequence[str], smoke: bool, overrides: Sequence[str] | Overrides) -> list[Command]:
    """(id, argv, extra environment) of each figure's ``python -m pexp.figures`` run."""
    commands = []
    for figure_id in ids:
        extra = [*SMOKE, *SMOKE_EXTRA.get(figure_id, [])] if smoke else []
        env = {"OMP_NUM_THREADS": "1"} if smoke and figure_id in ONE_THREAD else {}
        commands.append((figure_id, python_command("pexp.figures", [f"fig={figure_id}"], extra, overrides), env))
    return commands


def report_command(smoke: bool, overrides: Sequence[str] | Overrides) -> list[str]:
    """``python -m pexp.report`` on the output folder the figures went to (the last paths.* override wins)."""
    given = Overrides([*(SMOKE if smoke else []), *overrides])
    command = [sys.executable, "-m", "pexp.report"]
    for key, flag in (("paths.output_dir", "--output-dir"), ("paths.figures_dir", "--figures")):
        if given.value(key) is not None:
            command += [flag, str(given.value(key))]
    return command


def run_all(commands: Sequence[Command], report: list[str],
            run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[str]:
    """Run every figure's command, continuing past failures, then the report; returns the failed ids."""
    failed = []
    for figure_id, argv, env in commands:
        print(f"[reproduce-all] {figure_id}: {' '.join(argv[1:])}", flush=True)
        started = time.perf_counter()
        result = run(argv, cwd=ROOT, env={**os.environ, **env})
        status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        print(f"[reproduce-all] {figure_id}: {status} after {time.perf_counter() - started:.0f} s", flush=True)
        if result.returncode != 0:
            failed.append(figure_id)
    if run(report, cwd=ROOT).returncode != 0:
        failed.append("report")
    return failed


def main(argv: Sequence[str]) -> int:
    from pexp.figures import FIGURES

    smoke, dry_run = "--smoke" in argv, "--dry-run" in argv
    try:
        overrides = Overrides(item for item in argv if item not in ("--smoke", "--dry-run"))
    except OverrideParseException as error:
        print(f"error: {hydra_error_line(error, [])}", file=sys.stderr)
        return 2
    commands, report = figure_commands(list(FIGURES), smoke, overrides), report_command(smoke, overrides)
    if dry_run:
        for figure_id, command, env in commands:
            print(" ".join([*(f"{k}={v}" for k, v in env.items()), *command[1:]]))
        print(" ".join(report[1:]))
        return 0
    failed = run_all(commands, report)
    if failed:
        print(f"[reproduce-all] failed: {', '.join(failed)} (of {len(commands)} figures and the report)",
              file=sys.stderr)
        return 1
    print(f"[reproduce-all] all {len(commands)} figures made")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
