"""``python -m pexp.runs`` (``make runs``): a table of the runs under the output folder, and ``--prune``.

    python -m pexp.runs [--output-dir DIR] [--prune [--dry-run]]

One row per run directory ``<runs_dir>/<run_name>/<hash>``: the experiment it was made from, its status (finished,
partial at epoch k, locked by a live process, or a stale lock: a process died holding it), the overrides that
differ from that experiment's defaults, its size on disk and its evaluations. ``--prune`` removes the partial runs
nobody holds, after saying what it will remove (``--dry-run``: only say).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from pexp import CONF_DIR
from pexp.runs import COMPLETE, LOCK, NOT_HASHED, RUN_KEYS, RunDir, hashable

CONFIG = "config.yaml"
SWAPPABLE = ("data", "model", "loss", "perturb", "init", "optim")  # groups shown as `group=option` when swapped


@dataclass
class RunRow:
    """What the table says of one run directory."""

    path: Path
    state: str            # finished | locked | partial | stale | data (a data set's evaluations, no training)
    status: str           # the state in words (epoch reached, who holds the lock)
    size: int             # bytes on disk
    evaluations: list[str] = field(default_factory=list)
    experiment: str = "?"
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def dir_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file() and not item.is_symlink())


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _holder(text: str) -> str:
    pid, _, host = text.partition(" ")
    return (f"pid {pid}" + (f" on {host}" if host else "")) if pid else "a process"


def _last_epoch(run: RunDir) -> int:
    """The epoch of the last checkpoint (train_log.csv is written with it), 0 when none."""
    log = run / "train_log.csv"
    if not log.exists():
        return 0
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    try:
        return int(float(lines[-1].split(",")[0])) if len(lines) > 1 else 0
    except ValueError:
        return 0


def run_state(run: RunDir, epochs: int | None = None) -> tuple[str, str]:
    """(state, status in words) of a training run directory."""
    if run.complete:
        return "finished", "finished"
    held, holder = run.lock_holder()
    reached = f"epoch {_last_epoch(run)}" + (f"/{epochs}" if epochs else "")
    if held:
        return "locked", f"locked by {_holder(holder)} (live), at {reached}"
    if holder:
        return "stale", f"stale lock of {_holder(holder)} (gone), partial at {reached}"
    return "partial", f"partial at {reached}"


def evaluations(run: RunDir) -> list[str]:
    """``<name>`` per finished evaluation, ``<name> (running|partial)`` for the others."""
    out = []
    for folder in sorted((run / "eval").glob("*")) if (run / "eval").is_dir() else []:
        if not folder.is_dir():
            continue
        name = folder.name.rsplit("-", 1)[0]
        ev = RunDir(folder)
        out.append(name if ev.complete else f"{name} ({'running' if ev.lock_holder()[0] else 'partial'})")
    return out


# ----- the experiment a run was made from, and the overrides that differ from its defaults -----

def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def _identity(cfg: Any) -> dict[str, Any]:
    """The hashed part of a config (what makes a run), flattened to dotted keys."""
    tree = hashable(cfg)
    flat = _flatten({key: tree.get(key) for key in RUN_KEYS if key in tree})
    return {key: value for key, value in flat.items() if key not in NOT_HASHED}


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_text(item) for item in value) + "]"
    return str(value)


def _interpolation(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${") and value.endswith("}")


def _diff(run: dict[str, Any], base: dict[str, Any], links: dict[str, str] | None = None) -> list[str]:
    """``key=value`` for each value of ``run`` that differs from ``base`` (``+key=value`` for a key ``base``
    lacks, ``~key`` for one ``run`` lacks); a key that ``base`` takes from another (``links``: key -> the key of
    its ``${...}``) is left out while it still agrees with that other key in ``run``."""
    out = []
    for key, value in run.items():
        if key not in base:
            out.append(f"+{key}={_text(value)}")
        elif base[key] != value and not (key in (links or {}) and run.get(links[key]) == value):
            out.append(f"{key}={_text(value)}")
    return out + [f"~{key}" for key in base if key not in run]


class Experiments:
    """The experiments under conf/experiment, composed on demand (cached), to name a run's experiment and the
    overrides that set it apart."""

    def __init__(self) -> None:
        self._composed: dict[tuple[str, ...], tuple[dict[str, Any], dict[str, str]]] = {}
        self._options: dict[str, dict[str, dict[str, Any]]] = {}
        self._run_names: dict[str, list[str]] | None = None

    def identity(self, overrides: tuple[str, ...]) -> dict[str, Any]:
        return self._compose(overrides)[0]

    def links(self, overrides: tuple[str, ...]) -> dict[str, str]:
        """key -> the key its value is taken from (``seed: ${seed}``, ``outputs: ${loss.outputs}``)."""
        return self._compose(overrides)[1]

    def _compose(self, overrides: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, str]]:
        if overrides not in self._composed:
            cfg = compose(config_name="config", overrides=list(overrides))
            raw = _flatten({key: OmegaConf.to_container(cfg, resolve=False).get(key) for key in RUN_KEYS})
            links = {key: value[2:-1] for key, value in raw.items() if _interpolation(value)
                     and all(part.isidentifier() for part in value[2:-1].split("."))}
            self._composed[overrides] = (_identity(cfg), links)
        return self._composed[overrides]

    def run_names(self) -> dict[str, list[str]]:
        """run_name -> the experiments that set it."""
        if self._run_names is None:
            names: dict[str, list[str]] = {}
            for path in sorted((Path(CONF_DIR) / "experiment").glob("*.yaml")):
                raw = OmegaConf.load(path)
                name = raw.get("run_name") if "run_name" in raw else None
                if not isinstance(name, str):
                    name = self.identity_run_name(path.stem)
                names.setdefault(name, []).append(path.stem)
            self._run_names = names
        return self._run_names

    def identity_run_name(self, experiment: str) -> str:
        return str(compose(config_name="config", overrides=[f"experiment={experiment}"]).run_name)

    def options(self, group: str) -> dict[str, dict[str, Any]]:
        """The options of a config group, each as its own YAML says (flattened)."""
        if group not in self._options:
            self._options[group] = {path.stem: _flatten({key: value for key, value in OmegaConf.to_container(
                OmegaConf.load(path)).items() if key != "defaults"})  # its schema and the options it extends
                for path in sorted((Path(CONF_DIR) / group).glob("*.yaml"))}
        return self._options[group]

    def explain(self, run: dict[str, Any], experiment: str | None) -> list[str]:
        """The overrides that turn ``experiment``'s defaults into ``run``: ``group=option`` where a group was
        swapped, then each value that still differs."""
        base: tuple[str, ...] = (f"experiment={experiment}",) if experiment else ()
        swaps: list[str] = []
        for group in SWAPPABLE:
            mine = {key[len(group) + 1:]: value for key, value in run.items() if key.startswith(group + ".")}
            theirs = {key: value for key, value in self.identity(base + tuple(swaps)).items()
                      if key.startswith(group + ".")}
            if not _diff({f"{group}.{key}": value for key, value in mine.items()}, theirs):
                continue

            def score(option: dict[str, Any]) -> int:  # the same name first, then the most values in common
                agree = sum((100 if key == "name" else 1) * (1 if mine.get(key) == value else -1)
                            for key, value in option.items() if not _interpolation(value))
                return agree - sum(key not in option for key in mine)

            best = max(self.options(group).items(), key=lambda item: score(item[1]), default=None)
            if best is None:
                continue
            swapped = base + tuple(swaps) + (f"{group}={best[0]}",)
            before = len(self._diff(run, base + tuple(swaps)))
            if len(self._diff(run, swapped)) + 1 < before:  # it explains more than it costs (one override)
                swaps.append(f"{group}={best[0]}")
        return swaps + self._diff(run, base + tuple(swaps))

    def _diff(self, run: dict[str, Any], overrides: tuple[str, ...]) -> list[str]:
        return _diff(run, self.identity(overrides), self.links(overrides))

    def describe(self, cfg: Any) -> tuple[str, list[str]]:
        """(experiment name, overrides) of a run's config: the experiment of its run_name that needs the fewest
        overrides (two experiments that compose the same run are both named)."""
        run = _identity(cfg)
        candidates = self.run_names().get(str(cfg.get("run_name")), [])
        scored = [(experiment, self.explain(run, experiment)) for experiment in candidates] or [
            ("-", self.explain(run, None))]
        fewest = min(len(overrides) for _, overrides in scored)
        best = [(name, overrides) for name, overrides in scored if len(overrides) == fewest]
        return " = ".join(name for name, _ in best), best[0][1]


# ----- the table -----

def list_runs(runs_dir: Path | str, explain: bool = True) -> list[RunRow]:
    """One row per run directory under ``runs_dir`` (``<run_name>/<hash>``), sorted by path."""
    runs_dir = Path(runs_dir)
    folders = sorted(path for path in runs_dir.glob("*/*") if path.is_dir()) if runs_dir.is_dir() else []
    experiments = Experiments()
    rows = []
    context = _hydra() if explain and folders else None
    try:
        for folder in folders:
            run = RunDir(folder)
            cfg = OmegaConf.load(folder / CONFIG) if (folder / CONFIG).exists() else None
            if cfg is None and (folder / "eval").is_dir() and not (folder / "checkpoint.pt").exists():
                rows.append(RunRow(folder, "data", "data set only (no training)", dir_size(folder),
                                   evaluations(run), experiment=folder.parent.name))
                continue
            epochs = OmegaConf.select(cfg, "train.epochs") if cfg is not None else None
            state, status = run_state(run, epochs)
            row = RunRow(folder, state, status, dir_size(folder), evaluations(run))
            if cfg is not None and explain:
                try:
                    row.experiment, row.overrides = experiments.describe(cfg)
                except Exception as error:  # noqa: BLE001 - a config this version cannot compose: still listed
                    row.experiment, row.overrides = "?", [f"(cannot compare: {type(error).__name__})"]
            rows.append(row)
    finally:
        if context is not None:
            context.__exit__(None, None, None)
    return rows


def _hydra():
    if GlobalHydra.instance().is_initialized():
        return None
    context = initialize_config_dir(config_dir=CONF_DIR, version_base="1.3")
    context.__enter__()
    return context


def format_table(rows: Sequence[RunRow], runs_dir: Path | str) -> str:
    if not rows:
        return f"no runs under {runs_dir}"
    header = ("run", "experiment", "status", "size", "evaluations", "overrides")
    cells = [(row.name, row.experiment, row.status, human(row.size), ", ".join(row.evaluations) or "-",
              " ".join(row.overrides) or "-") for row in rows]
    widths = [max(len(header[i]), *(len(cell[i]) for cell in cells)) for i in range(len(header) - 1)]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line[:-1], widths)) + "  " + line[-1]
             for line in (header, *cells)]
    counts = {state: sum(row.state == state for row in rows) for state in ("finished", "partial", "stale",
                                                                           "locked", "data")}
    summary = ", ".join(f"{count} {state}" for state, count in counts.items() if count)
    return "\n".join([f"{len(rows)} run(s) under {runs_dir} ({summary}; {human(sum(r.size for r in rows))})",
                      *lines])


def prune(rows: Sequence[RunRow], dry_run: bool = False, out=sys.stdout) -> list[Path]:
    """Remove the partial runs nobody holds (partial, or a stale lock), saying first what will go. A run that
    became held or finished in the meantime is kept."""
    targets = [row for row in rows if row.state in ("partial", "stale")]
    if not targets:
        print("nothing to prune: no partial run that nobody holds", file=out)
        return []
    print(f"{'would remove' if dry_run else 'removing'} {len(targets)} partial run(s) nobody holds "
          f"({human(sum(row.size for row in targets))}):", file=out)
    for row in targets:
        print(f"  {row.path}  ({row.status}, {human(row.size)})", file=out)
    if dry_run:
        return []
    removed = []
    for row in targets:
        fd = os.open(row.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"  kept {row.path}: a process took it meanwhile", file=out)
                continue
            if (row.path / COMPLETE).exists():
                print(f"  kept {row.path}: it finished meanwhile", file=out)
                continue
            shutil.rmtree(row.path)
            removed.append(row.path)
            with contextlib.suppress(OSError):  # its run_name folder, when that was its last run
                row.path.parent.rmdir()
        finally:
            os.close(fd)
    print(f"removed {len(removed)} run(s)", file=out)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pexp.runs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=os.environ.get("PEXP_OUTPUT") or "outputs",
                        help="the output folder (default $PEXP_OUTPUT, else outputs): its runs/ are listed")
    parser.add_argument("--runs-dir", help="the runs folder itself (default <output-dir>/runs)")
    parser.add_argument("--prune", action="store_true", help="remove the partial runs nobody holds")
    parser.add_argument("--dry-run", action="store_true", help="with --prune: only say what would be removed")
    args = parser.parse_args(argv)
    runs_dir = Path(args.runs_dir or Path(args.output_dir) / "runs")
    rows = list_runs(runs_dir)
    print(format_table(rows, runs_dir))
    if args.prune:
        print()
        prune(rows, dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
