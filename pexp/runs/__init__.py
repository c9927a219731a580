"""Run directories keyed by config hash, atomic writes, completion markers and locks.

The one run-directory mechanism of pexp: training runs and evaluations both use :class:`RunDir`.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pandas as pd
import torch
from omegaconf import MISSING, DictConfig, OmegaConf

COMPLETE = "COMPLETE"
LOCK = ".lock"
SITTINGS = "sittings.json"  # one entry per sitting that worked on the directory: seconds, machine, passes
TMP_SUFFIX = ".tmp"  # temporary files of atomic_write: .<stem>.<random>.tmp<suffix>

# The keys of the training config that define a run, and the ones inside them that only say where or how
# to find/show things (not hashed).
RUN_KEYS = ("data", "model", "loss", "perturb", "init", "optim", "train", "seed")
NOT_HASHED = {"data.root", "data.download", "data.verify_checksums", "data.base.root", "data.base.download",
              "data.base.verify_checksums", "train.progress", "train.log_every", "train.checkpoint_every",
              "train.memory_format"}


def _unset_dropped(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _unset_dropped(value) for key, value in tree.items() if value != MISSING}
    return [_unset_dropped(value) for value in tree] if isinstance(tree, list) else tree


def hashable(cfg: Any) -> Any:
    """A config as plain, resolved data for a hash. A key left unset (``???``: an optional key its schema declares,
    pexp.schema.UNSET) is left out as if absent, so declaring optional keys in a schema moves no hash."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return _unset_dropped(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    return cfg



def _drop(tree: dict, dotted: set[str], prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if name in dotted:
            continue
        out[key] = _drop(value, dotted, name + ".") if isinstance(value, dict) else value
    return out


def config_hash(tree: Mapping[str, Any], length: int = 12) -> str:
    """A short stable hash of a (resolved) config tree."""
    text = json.dumps(hashable(tree), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def run_identity(cfg: DictConfig) -> dict:
    """The part of a training config that identifies a run (what is hashed)."""
    tree = {key: hashable(cfg[key]) for key in RUN_KEYS}
    return _drop(tree, NOT_HASHED)


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``: ``path`` is either
    its old self or complete, never partial. An OS error (disk full, not writable) names ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{TMP_SUFFIX}{path.suffix}", dir=path.parent)
        os.close(fd)
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(error, OSError) and error.errno is not None and error.filename != str(path):
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    return path


def write_text(path: Path | str, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _strict(obj: Any) -> Any:
    """JSON has no NaN or infinity: NaN becomes null, infinities the strings "inf" / "-inf"."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {key: _strict(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(value) for value in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        return _strict(obj.item())
    return obj


def write_json(path: Path | str, obj: Any) -> Path:
    """Strict JSON (no NaN / Infinity tokens), written atomically."""
    return write_text(path, json.dumps(_strict(obj), indent=2, allow_nan=False) + "\n")


def write_csv(path: Path | str, frame: pd.DataFrame) -> Path:
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def torch_save(path: Path | str, obj: Any) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what the platform module says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Where work runs now: host, CPU model, CPU count, torch's threads, torch's CPU kernels and the 1-minute load
    average."""
    return dict(host=socket.gethostname(), cpu=cpu_model(), cpu_count=os.cpu_count(),
                torch_threads=torch.get_num_threads(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
                loadavg=os.getloadavg()[0])


class PassCounter:
    """The sample rows a model pushes through its forward pass, through backward passes from its output (any
    gradient: of the weights or of the inputs alone) and, of those, through backward passes that reached its last
    parameter (a weight update's). Counts the model's copies too (``copy.deepcopy`` keeps forward hooks)."""

    def __init__(self) -> None:
        self.forward = self.backward = self.weight_backward = 0
        self._last_rows = 0  # the rows of the backward pass now running
        self._handles: list = []

    def watch(self, model: torch.nn.Module) -> None:
        counter = self

        def backward(rows: int, grad: torch.Tensor) -> None:
            counter.backward += rows
            counter._last_rows = rows

        def forward_hook(module: torch.nn.Module, args: tuple, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.dim():
                rows = output.shape[0]
                counter.forward += rows
                if output.requires_grad:
                    output.register_hook(lambda grad, rows=rows: backward(rows, grad))

        def weight_hook(grad: torch.Tensor) -> None:
            counter.weight_backward += counter._last_rows

        self._handles.append(model.register_forward_hook(forward_hook))
        last = [param for param in model.parameters() if param.requires_grad][-1:]
        self._handles += [param.register_hook(weight_hook) for param in last]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def counts(self) -> dict:
        return dict(forward_rows=self.forward, backward_rows=self.backward, weight_backward_rows=self.weight_backward)


class RunDir:
    """A directory holding one unit of work (a training run or an evaluation), finished when its marker exists.
    The marker records the sitting that finished it: its wall time from taking the lock to the marker, and the
    machine it ran on (:func:`machine`, the load average at both ends); and the totals of every sitting that worked
    on it (``sittings.json``: seconds and the model passes :meth:`count_passes` counted)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._sitting: tuple[float, float] | None = None  # (perf_counter, load average) when the lock was taken
        self._sitting_id = ""
        self._counter: PassCounter | None = None  # counts this sitting's model passes (None: not counted)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def complete(self) -> bool:
        return (self.path / COMPLETE).exists()

    def _this_sitting(self) -> dict:
        """This sitting so far: the seconds since this process took the lock and the machine (:func:`machine`,
        load average at the lock and now)."""
        sitting = machine()
        if self._sitting is not None:
            started, load = self._sitting
            sitting.update(seconds=time.perf_counter() - started, loadavg_start=load,
                           loadavg_end=sitting.pop("loadavg"))
        return sitting

    def count_passes(self, model: torch.nn.Module) -> None:
        """Count the passes through ``model`` (:class:`PassCounter`) until the lock is released; recorded with this
        sitting. Call it with the lock held."""
        if self._counter is not None:
            self._counter.watch(model)

    def stop_counting(self) -> None:
        """This sitting's passes are not counted (its work is done by other means than the watched model)."""
        if self._counter is not None:
            self._counter.close()
        self._counter = None

    def record_sitting(self) -> list[dict]:
        """Write this sitting so far (seconds, machine, counted passes or ``counted: false``) into
        ``sittings.json``, replacing its earlier entry; returns every sitting recorded. Called where progress is
        saved (a checkpoint, a finished part) and at the marker, so that the seconds of work spread over several
        sittings add up; work lost to an interruption after the last saved progress is done again and counted
        then."""
        try:
            sittings = json.loads((self.path / SITTINGS).read_text())
        except (OSError, ValueError):
            sittings = []
        entry = dict(id=self._sitting_id, **self._this_sitting(), counted=self._counter is not None,
                     **(self._counter.counts() if self._counter is not None else {}))
        sittings = [item for item in sittings if item.get("id") != self._sitting_id] + [entry]
        write_json(self.path / SITTINGS, sittings)
        return sittings

    def mark_complete(self, info: Mapping[str, Any] | None = None) -> None:
        """Written last: its presence means every other file of the run is final. Adds ``sitting`` (this one,
        :meth:`_this_sitting`) and ``sittings``: their number, and the seconds and passes summed over all of them
        (passes None when a sitting did not count them)."""
        sittings = self.record_sitting()
        counted = all(item.get("counted") for item in sittings)
        totals = dict(count=len(sittings), seconds=sum(float(item.get("seconds", 0.0)) for item in sittings),
                      **{key: sum(int(item[key]) for item in sittings) if counted else None
                         for key in ("forward_rows", "backward_rows", "weight_backward_rows")})
        write_json(self.path / COMPLETE, {**(info or {}), "sitting": self._this_sitting(), "sittings": totals})

    def mark_incomplete(self) -> None:
        """Withdraw the marker (a finished run found damaged is redone)."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / COMPLETE).unlink()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock on the directory, so two processes never work on the same run at once. Whoever holds
        it first removes the temporary files a killed process left behind. The holder writes ``<pid> <host>`` into
        ``.lock`` and empties it on release: a name left there means its process died holding the lock."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._sitting = (time.perf_counter(), os.getloadavg()[0])
            self._sitting_id, self._counter = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}", PassCounter()
            with contextlib.suppress(OSError):  # who holds it is for `python -m pexp.runs`, never a reason to stop
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            for stale in self.path.glob(f".*{TMP_SUFFIX}*"):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            try:
                yield
            finally:
                self.stop_counting()
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def lock_holder(self) -> tuple[bool, str]:
        """(whether a live process holds the lock now, the ``<pid> <host>`` the last holder wrote: empty when it
        released the lock, or for a directory never locked)."""
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except FileNotFoundError:
            return False, ""
        try:
            holder = os.read(fd, 256).decode(errors="replace").strip()
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True, holder
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False, holder
        finally:
            os.close(fd)


def training_run_dir(cfg: DictConfig) -> RunDir:
    """``<runs_dir>/<run_name>/<hash of the run identity>``."""
    return RunDir(Path(cfg.paths.runs_dir) / str(cfg.run_name) / config_hash(run_identity(cfg)))

