"""Make every figure ``pexp.figures.FIGURES`` knows, then the report page (``make reproduce-all``, ``make smoke``).

    python scripts/reproduce_all.py [--smoke] [--dry-run] [--plan] [--figures ID,ID...] [hydra overrides ...]

Before any work it prints its plan: per figure, the runs it will reuse, resume from their checkpoints or train, the
evaluations it will reuse or compute, and an estimate of its time from the seconds this machine (its CPU model)
recorded for the same runs and evaluations before (``$XDG_CACHE_HOME/pexp/seconds.json``, else ``~/.cache``;
learnt from every output folder this script has worked on). ``--plan`` stops there, ``--dry-run`` prints the
commands instead.

Each figure is its own ``python -m pexp.figures fig=<id> ...`` process (finished runs and evaluations are reused,
interrupted runs resume from their checkpoints). A failing figure does not stop the others. What the call has done
is kept in ``<output_dir>/reproduce-all/state.json``, also when it is stopped by Ctrl-C or SIGTERM (with the wall
seconds spent so far): a second call with the same overrides resumes, skipping the figures already made; once every
figure is made the next call starts a new one. It ends with one table (also
``<output_dir>/reproduce-all/summary.{md,json}``): per figure the seconds its runs, evaluations and drawing took over
every sitting (from their records, ``benchmarks/accounting.py``), the wall seconds of its calls, the runs reused from
before, and its paper claims holding / failing. ``--smoke`` makes every figure from tiny configs under outputs/smoke
(the CI run). Extra overrides reach every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra.errors import OverrideParseException  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from benchmarks.accounting import account  # noqa: E402
from pexp.cli import hydra_error_line  # noqa: E402
from pexp.errors import ConfigError  # noqa: E402
from pexp.eval.evaluators import DATA_EVALUATORS, EVALUATORS  # noqa: E402
from pexp.eval.evaluators.common import eval_dir  # noqa: E402
from pexp.figures import FIGURES  # noqa: E402
from pexp.figures.base import figure_configs  # noqa: E402
from pexp.figures.compose import figure_command  # noqa: E402
from pexp.overrides import Overrides, python_command  # noqa: E402
from pexp.runs import RunDir, config_hash, cpu_model, run_identity, training_run_dir, write_json, write_text  # noqa: E402

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
STATE_DIR = "reproduce-all"  # under the output folder: state.json, summary.{md,json}

Command = tuple[str, list[str], dict[str, str]]


def figure_overrides(figure_id: str, smoke: bool, overrides: Sequence[str] | Overrides) -> list[str]:
    """The overrides of one figure's run: the smoke ones (with ``smoke``), then the command line's."""
    given = overrides.strings() if isinstance(overrides, Overrides) else list(overrides)
    return [*([*SMOKE, *SMOKE_EXTRA.get(figure_id, [])] if smoke else []), *given]


def figure_commands(ids: Sequence[str], smoke: bool, overrides: Sequence[str] | Overrides) -> list[Command]:
    """(id, argv, extra environment) of each figure's ``python -m pexp.figures`` run."""
    commands = []
    for figure_id in ids:
        env = {"OMP_NUM_THREADS": "1"} if smoke and figure_id in ONE_THREAD else {}
        commands.append((figure_id, python_command("pexp.figures", [f"fig={figure_id}"],
                                                   figure_overrides(figure_id, smoke, overrides)), env))
    return commands


def report_command(smoke: bool, overrides: Sequence[str] | Overrides) -> list[str]:
    """``python -m pexp.report`` on the output folder the figures went to (the last paths.* override wins)."""
    given = Overrides([*(SMOKE if smoke else []), *overrides])
    command = [sys.executable, "-m", "pexp.report"]
    for key, flag in (("paths.output_dir", "--output-dir"), ("paths.figures_dir", "--figures")):
        if given.value(key) is not None:
            command += [flag, str(given.value(key))]
    return command


# ------------------------------------------------------------------------------------------------ the plan
@dataclass
class Unit:
    """A piece of work a figure needs: a run's training or an evaluation, keyed by its folder under runs_dir."""

    kind: str  # train | evaluate
    key: str
    status: str  # reuse | resume | train | evaluate


@dataclass
class FigurePlan:
    figure_id: str
    output_dir: Path
    units: list[Unit] = field(default_factory=list)
    error: str | None = None

    def count(self, kind: str, status: str) -> int:
        return sum(1 for unit in self.units if unit.kind == kind and unit.status == status)

    def todo(self) -> list[Unit]:
        return [unit for unit in self.units if unit.status != "reuse"]


def _units(cfg: DictConfig) -> list[Unit]:
    """The training run and the evaluation one composed config stands for, with what is left to do of each."""
    runs_dir = Path(cfg.paths.runs_dir)
    name = cfg.eval.name
    if name in DATA_EVALUATORS:
        run = RunDir(runs_dir / str(cfg.run_name) / config_hash(run_identity(cfg)["data"]))
        units = []
    elif name in EVALUATORS:
        run = training_run_dir(cfg)
        status = "reuse" if run.complete else "resume" if (run / "checkpoint.pt").exists() else "train"
        units = [Unit("train", str(run.path.relative_to(runs_dir)), status)]
    else:  # a formula (no run, no cache)
        return []
    out = eval_dir(run, cfg.eval)
    units.append(Unit("evaluate", str(out.path.relative_to(runs_dir)), "reuse" if out.complete else "evaluate"))
    return units


def plan_figures(ids: Sequence[str], smoke: bool, overrides: Sequence[str] | Overrides) -> list[FigurePlan]:
    """Every figure's units, composed from its configs as ``python -m pexp.figures`` composes them."""
    plans = []
    for figure_id in ids:
        command = figure_command([f"fig={figure_id}", *figure_overrides(figure_id, smoke, overrides)])
        plan = FigurePlan(figure_id, Path(command.cfg.paths.output_dir))
        try:
            seen = set()
            for cfg in figure_configs(FIGURES[figure_id], command).values():
                for unit in _units(cfg):
                    if unit.key not in seen:
                        seen.add(unit.key)
                        plan.units.append(unit)
        except ConfigError as error:
            plan.error = str(error)
        plans.append(plan)
    return plans


# -------------------------------------------------------------------- seconds this machine recorded before
def history_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pexp" / "seconds.json"


def load_history() -> dict[str, float]:
    """Seconds this CPU model recorded per unit (``train:<run>``, ``evaluate:<evaluation>``, ``draw:<figure>``)."""
    try:
        return json.loads(history_path().read_text()).get(cpu_model(), {})
    except (OSError, ValueError):
        return {}


def learn_history(output_dir: Path, smoke: bool) -> None:
    """Add the seconds recorded under ``output_dir`` (runs, evaluations, drawings made on this CPU model) to the
    history; a record from another CPU is left out."""
    try:
        result = account(output_dir, floors=False)
    except ConfigError:  # no figure made there yet
        return
    try:
        every = json.loads(history_path().read_text())
    except (OSError, ValueError):
        every = {}
    mine, runs_dir = every.setdefault(cpu_model(), {}), (output_dir / "runs").resolve()
    for figure in result["figures"]:
        drawn = [stage["seconds"] for stage in figure["stages"] if stage["stage"] not in ("train", "evaluate")
                 and stage["seconds"] is not None]
        if drawn:
            mine[f"draw:{figure['id']}{':smoke' if smoke else ''}"] = sum(drawn)
        for stage in figure["stages"]:
            if stage["stage"] in ("train", "evaluate") and stage["seconds"] is not None \
                    and stage["cpu"] in (None, cpu_model()):
                key = Path(stage["key"]).resolve()
                if key.is_relative_to(runs_dir):  # the plan's keys: folders under runs_dir
                    mine[f"{stage['stage']}:{key.relative_to(runs_dir)}"] = stage["seconds"]
    write_json(history_path(), every)


def estimate(plan: FigurePlan, history: dict[str, float], smoke: bool, counted: set[str]) -> tuple[float, int]:
    """(seconds recorded for what is left of the figure, units left with no record); a unit shared with a figure
    planned earlier (in ``counted``) is that figure's."""
    seconds, unknown = history.get(f"draw:{plan.figure_id}{':smoke' if smoke else ''}", 0.0), 0
    for unit in plan.todo():
        if unit.key in counted:
            continue
        counted.add(unit.key)
        recorded = history.get(f"{unit.kind}:{unit.key}")
        seconds, unknown = (seconds + recorded, unknown) if recorded is not None else (seconds, unknown + 1)
    return seconds, unknown


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def guess_text(seconds: float, untimed: int) -> str:
    """An estimate as read: the seconds recorded, and the units of work never timed on this CPU."""
    if not untimed:
        return _duration(seconds)
    never = f"{untimed} unit(s) never timed on this CPU"
    return f"{_duration(seconds)} + {never}" if seconds else f"unknown ({never})"


def plan_text(plans: Sequence[FigurePlan], estimates: dict[str, tuple[float, int]], done: set[str]) -> str:
    rows = [("figure", "runs reuse/resume/train", "evaluations reuse/todo", "estimate")]
    for plan in plans:
        left, unknown = estimates[plan.figure_id]
        if plan.figure_id in done:
            guess = "made in an earlier sitting"
        elif plan.error:
            guess = f"cannot plan: {plan.error}"
        else:
            guess = guess_text(left, unknown)
        rows.append((plan.figure_id, "/".join(str(plan.count("train", s)) for s in ("reuse", "resume", "train")),
                     f"{plan.count('evaluate', 'reuse')}/{plan.count('evaluate', 'evaluate')}", guess))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
             for row in rows]
    todo = [estimates[p.figure_id] for p in plans if p.figure_id not in done]
    unknown = sum(u for _, u in todo)
    lines.append(f"  total estimate: {guess_text(sum(s for s, _ in todo), unknown)} ({cpu_model()})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- state and summary
def load_state(path: Path, identity: dict) -> tuple[dict, bool]:
    """(the state of an unfinished call with the same overrides, True), else a new state and False."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = None
    if state and not state.get("finished_utc") and state.get("identity") == identity:
        return state, True
    return dict(identity=identity, started_utc=_now(), finished_utc=None, figures={}), False


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def claim_counts(figures_dir: Path, figure_id: str) -> tuple[int, int, int] | None:
    """(paper claims holding, failing, diagnostics) of a made figure."""
    try:
        claims = json.loads((figures_dir / f"{figure_id}.claims.json").read_text())
    except (OSError, ValueError):
        return None
    judged = [item for item in claims if not item.get("diagnostic")]
    holding = sum(1 for item in judged if item.get("holds"))
    return holding, len(judged) - holding, len(claims) - len(judged)


def summary(state: dict, output_dir: Path, figures_dir: Path) -> dict:
    """Per figure: status, seconds of train / evaluate / draw over every sitting (the records), wall seconds of its
    calls, runs reused from before the call, claims; and the totals (shared work once)."""
    try:
        accounted = {figure["id"]: figure for figure in account(output_dir, floors=False)["figures"]}
    except ConfigError:
        accounted = {}
    rows, unique = [], {}
    for figure_id, entry in state["figures"].items():
        stages = accounted.get(figure_id, {}).get("stages", [])
        seconds = {kind: sum(s["seconds"] or 0.0 for s in stages if (s["stage"] if s["stage"] in
                                                                     ("train", "evaluate") else "draw") == kind)
                   for kind in ("train", "evaluate", "draw")}
        for stage in stages:
            unique[stage["key"]] = stage["seconds"] or 0.0
        rows.append(dict(figure=figure_id, status=entry["status"], **seconds, wall=entry["wall_seconds"],
                         sittings=entry["calls"], runs_reused=entry["runs_reused"], runs=entry["runs"],
                         claims=claim_counts(figures_dir, figure_id)))
    return dict(output_dir=str(output_dir), started_utc=state["started_utc"], finished_utc=state["finished_utc"],
                cpu=cpu_model(), figures=rows, recorded_seconds=sum(unique.values()),
                wall_seconds=sum(row["wall"] for row in rows))


def summary_markdown(result: dict) -> str:
    header = ("figure", "status", "train s", "evaluate s", "draw s", "wall s (sittings)", "runs reused",
              "claims hold / fail (+ diagnostics)")
    lines = [f"# reproduce-all: {result['output_dir']}", "",
             f"Started {result['started_utc']}, finished {result['finished_utc'] or '-'}, on {result['cpu']}. "
             "Train, evaluate and draw are the seconds the work recorded over every sitting (a run or evaluation "
             "several figures share counts in each); wall is this reproduce-all's calls of the figure.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["figures"]:
        claims = "-" if row["claims"] is None else \
            f"{row['claims'][0]} / {row['claims'][1]}" + (f" (+{row['claims'][2]})" if row["claims"][2] else "")
        lines.append(f"| {row['figure']} | {row['status']} | {row['train']:.0f} | {row['evaluate']:.0f} | "
                     f"{row['draw']:.0f} | {row['wall']:.0f} ({row['sittings']}) | {row['runs_reused']} of "
                     f"{row['runs']} | {claims} |")
    lines += ["", f"Recorded seconds, shared work once: {result['recorded_seconds']:.0f} s "
              f"({result['recorded_seconds'] / 3600:.2f} h); wall seconds of the calls: {result['wall_seconds']:.0f} s "
              f"({result['wall_seconds'] / 3600:.2f} h).", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- the run
def run_all(commands: Sequence[Command], report: list[str],
            run: Callable[..., subprocess.CompletedProcess] = subprocess.run, *, state: dict | None = None,
            state_path: Path | None = None, estimates: dict[str, tuple[float, int]] | None = None,
            plans: dict[str, FigurePlan] | None = None) -> list[str]:
    """Run every figure's command not already made in this call's ``state``, continuing past failures, then the
    report; returns the failed ids. The state (written to ``state_path`` after each figure and when interrupted)
    keeps each figure's status, wall seconds and calls."""
    state = state if state is not None else dict(figures={})
    estimates, plans = estimates or {}, plans or {}
    failed, started_all = [], time.perf_counter()
    todo = [item for item in commands if state["figures"].get(item[0], {}).get("status") != "made"]
    left = sum(estimates.get(figure_id, (0.0, 0))[0] for figure_id, _, _ in todo)
    for number, (figure_id, argv, env) in enumerate(commands, 1):
        plan = plans.get(figure_id)
        entry = state["figures"].setdefault(figure_id, dict(
            status="pending", wall_seconds=0.0, calls=0,
            runs=sum(1 for unit in plan.units if unit.kind == "train") if plan else 0,
            runs_reused=plan.count("train", "reuse") if plan else 0))
        if entry["status"] == "made":
            print(f"[reproduce-all] {number}/{len(commands)} {figure_id}: made in an earlier sitting", flush=True)
            continue
        guess, untimed = estimates.get(figure_id, (0.0, -1))
        print(f"[reproduce-all] {number}/{len(commands)} {figure_id} (estimate "
              f"{'-' if untimed < 0 else guess_text(guess, untimed)}; "
              f"{_duration(time.perf_counter() - started_all)} so far, about {_duration(left)} left): "
              f"{' '.join(argv[1:])}", flush=True)
        started = time.perf_counter()
        try:
            result = run(argv, cwd=ROOT, env={**os.environ, **env})
        finally:  # also when interrupted: the seconds spent count, and the state says where it stopped
            entry["wall_seconds"] += time.perf_counter() - started
            entry["calls"] += 1
            if state_path is not None:
                write_json(state_path, state)
        entry["status"] = "made" if result.returncode == 0 else f"failed (exit {result.returncode})"
        if state_path is not None:
            write_json(state_path, state)
        left = max(0.0, left - guess)
        print(f"[reproduce-all] {figure_id}: {'ok' if result.returncode == 0 else 'FAILED' + entry['status'][6:]} "
              f"after {time.perf_counter() - started:.0f} s", flush=True)
        if result.returncode != 0:
            failed.append(figure_id)
    if run(report, cwd=ROOT).returncode != 0:
        failed.append("report")
    return failed


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, Overrides]:
    parser = argparse.ArgumentParser(prog="reproduce_all.py", description=__doc__.split("\n\n")[0],
                                     exit_on_error=False)
    parser.add_argument("--smoke", action="store_true", help="tiny configs into outputs/smoke (the CI run)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, do nothing")
    parser.add_argument("--plan", action="store_true", help="print the plan, do nothing")
    parser.add_argument("--figures", default=None, help="a comma list of figure ids (default: all)")
    try:
        args, rest = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as error:
        raise ConfigError(str(error)) from None
    flags = [item for item in rest if item.startswith("-")]
    if flags:
        raise ConfigError(f"{flags[0]} is not allowed: the options are --smoke, --dry-run, --plan, --figures")
    ids = list(FIGURES) if args.figures is None else [item for item in args.figures.split(",") if item]
    unknown = [item for item in ids if item not in FIGURES]
    if unknown or not ids:
        raise ConfigError(f"--figures={args.figures} is not allowed: choose among {', '.join(FIGURES)}")
    args.ids = ids
    try:
        return args, Overrides(rest)
    except OverrideParseException as error:
        raise ConfigError(hydra_error_line(error, [])) from None


def main(argv: Sequence[str], run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> int:
    try:
        args, overrides = parse(argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    commands, report = figure_commands(args.ids, args.smoke, overrides), report_command(args.smoke, overrides)
    if args.dry_run:
        for figure_id, command, env in commands:
            print(" ".join([*(f"{k}={v}" for k, v in env.items()), *command[1:]]))
        print(" ".join(report[1:]))
        return 0
    plans = plan_figures(args.ids, args.smoke, overrides)
    output_dir = plans[0].output_dir
    figures_dir = Path(figure_command(["fig=" + args.ids[0], *figure_overrides(args.ids[0], args.smoke,
                                                                               overrides)]).cfg.paths.figures_dir)
    state_path = output_dir / STATE_DIR / "state.json"
    identity = dict(overrides=overrides.strings(), smoke=args.smoke, figures=args.ids)
    state, resumed = load_state(state_path, identity)
    learn_history(output_dir, args.smoke)
    history, counted = load_history(), set()
    estimates = {plan.figure_id: estimate(plan, history, args.smoke, counted) for plan in plans}
    done = {figure_id for figure_id, entry in state["figures"].items() if entry["status"] == "made"}
    print(f"[reproduce-all] plan: {len(plans)} figures into {output_dir}"
          + (f" (resuming the call started {state['started_utc']}: {len(done)} made)" if resumed else ""))
    print(plan_text(plans, estimates, done), flush=True)
    if args.plan:
        return 0
    failed = run_all(commands, report, run, state=state, state_path=state_path, estimates=estimates,
                     plans={plan.figure_id: plan for plan in plans})
    if not [item for item in failed if item != "report"]:
        state["finished_utc"] = _now()
    write_json(state_path, state)
    learn_history(output_dir, args.smoke)
    result = summary(state, output_dir, figures_dir)
    write_json(output_dir / STATE_DIR / "summary.json", result)
    text = summary_markdown(result)
    write_text(output_dir / STATE_DIR / "summary.md", text)
    print(text)
    if failed:
        print(f"[reproduce-all] failed: {', '.join(failed)} (of {len(commands)} figures and the report); a second "
              "call resumes", file=sys.stderr)
        return 1
    print(f"[reproduce-all] all {len(commands)} figures made")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # a `kill` stops it as Ctrl-C does: the state keeps the seconds spent
    try:
        raise SystemExit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("[reproduce-all] interrupted; a second call with the same arguments resumes", file=sys.stderr)
        raise SystemExit(130) from None
