"""The one training loop of pexp: pluggable loss, perturbation strategy (Algorithm 1) and optimiser rule."""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, Optional

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from pexp.config import resolve_device, validate_training
from pexp.errors import ConfigError
from pexp.data import Dataset, load_dataset
from pexp.losses import Loss, first_layer_norm
from pexp.models import EntryNet, build_model, predict, prefers_channels_last, score
from pexp.runs import RunDir, hashable, torch_save, training_run_dir, write_csv, write_json, write_text
from pexp.schema import UNSET, cross_check, flag, integer, number, store
from pexp.train.optim import LrSchedule, build_optimizer
from pexp.train.perturb import active_layers, eps_at_epoch, extreme_perturbations, output_directions


def training_step(model: EntryNet, optimizer: torch.optim.Optimizer, reduction: str, x: torch.Tensor,
                  y: torch.Tensor, loss: Loss, eps: float, pieces: int, active: list[bool],
                  first_layer_penalty: float = 0.0, penalty_form: str = "norm") -> torch.Tensor:
    """One update; returns the summed loss of the batch (detached). With perturbations (Algorithm 1) each
    sample's loss is the sum of its losses at the argmax- and argmin-perturbed forward passes.
    ``first_layer_penalty`` adds that times :func:`first_layer_norm` of the first affine layer (``penalty_form``)."""
    if any(active) and eps > 0:
        directions = None if loss.direction_rounds is None else \
            output_directions(model, x, active, loss.direction_rounds)  # PE section 7.1: one v_i per sample
        perturbations = extreme_perturbations(model, x, eps, pieces, active, directions)
        losses = loss.per_sample(model(torch.cat([x, x]), perturbations), torch.cat([y, y]))
    elif any(active):  # Algorithm 1 at radius 0: both perturbed passes are the clean pass
        losses = 2 * loss.per_sample(model(x), y)
    else:
        losses = loss.per_sample(model(x), y)
    total = losses.sum()
    objective = total if reduction == "sum" else total / x.shape[0]
    if first_layer_penalty:
        objective = objective + first_layer_penalty * first_layer_norm(model, penalty_form)
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    optimizer.step()
    return total.detach()


@torch.no_grad()
def error_rate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threshold: float = 0.5,
               batch_size: int = 2000) -> torch.Tensor:
    """Per-point misclassification (bool) of clean inputs."""
    was_training = model.training
    model.eval()  # batch-norm / dropout variants: inference mode
    wrong = [predict(model(x[i:i + batch_size]), threshold) != y[i:i + batch_size]
             for i in range(0, len(y), batch_size)]
    model.train(was_training)
    return torch.cat(wrong) if wrong else torch.zeros(0, dtype=torch.bool)


@torch.no_grad()
def training_margin(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threshold: float) -> torch.Tensor:
    """min_i s_i (score(x_i) - threshold) with s = -1/+1 for targets 0/1: positive once every point is right."""
    outputs = model(x)
    shifted = score(outputs) - (threshold if outputs.shape[1] == 1 else 0.0)
    return ((2 * y - 1).to(shifted.dtype) * shifted).min()


def _load_checkpoint(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - a truncated or corrupted checkpoint is redone, not trusted
        warnings.warn(f"checkpoint {path} is unreadable ({type(error).__name__}); starting this run again",
                      stacklevel=2)
        return None


def state_path(run: RunDir, epoch: int) -> Path:
    """Where ``train.keep_states`` keeps the weights after ``epoch`` epochs (0: the init)."""
    return run / "states" / f"epoch_{epoch:03d}.pt"


def recorded_train_seconds(run: Path) -> float | None:
    """A run's training wall time from its train_log.csv (each row's seconds per epoch x the epochs it covers);
    None when the run has no log."""
    if not (run / "train_log.csv").exists():
        return None
    log = pd.read_csv(run / "train_log.csv")
    interval = log["epoch"].diff().fillna(log["epoch"].iloc[0])
    return float((log["seconds"] * interval).sum())


def train(cfg: DictConfig) -> RunDir:
    """Train the run ``cfg`` describes, or reuse it when finished; resume from its checkpoint when interrupted."""
    validate_training(cfg)
    run = training_run_dir(cfg)
    if run.complete and _model_readable(run):
        print(f"[pexp] reusing finished run {run.path}")
        return run
    with run.lock():
        if run.complete and _model_readable(run):  # finished by another process while we waited
            return run
        if run.complete:
            warnings.warn(f"run {run.path} is marked finished but its model.pt is unreadable; redoing it from its "
                          f"last valid checkpoint", stacklevel=2)
            run.mark_incomplete()
        _train_locked(cfg, run)
    return run


def _model_readable(run: RunDir) -> bool:
    """Whether a finished run's model.pt loads (a truncated or corrupted one means the run is redone)."""
    try:
        torch.load(run / "model.pt", map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - any failure to load means the file cannot be trusted
        return False
    return True


def start_run(cfg: DictConfig, run: RunDir,
              device: torch.device) -> tuple[Dataset, EntryNet, torch.optim.Optimizer, str, int, list[dict]]:
    """A run as it starts or resumes: its data (on the device), seeded model and optimiser (loaded from
    ``checkpoint.pt`` when there is one), the batch-loss reduction, the epochs already done and their log rows;
    writes config.yaml."""
    data = on_device(load_dataset(cfg.data), device)
    torch.manual_seed(int(cfg.seed))
    model = build_model(cfg.model, data.input_shape, cfg.init).to(device)
    run.count_passes(model)  # recorded with the sitting (sittings.json, COMPLETE)
    optimizer, reduction = build_optimizer(cfg.optim, model.parameters())
    write_text(run / "config.yaml", OmegaConf.to_yaml(hashable(cfg)))  # without the unset keys
    if bool(cfg.train.get("keep_states", False)) and not state_path(run, 0).exists():
        torch_save(state_path(run, 0), model.state_dict())  # epoch 0: the init (the same on every attempt)
    state = _load_checkpoint(run / "checkpoint.pt")
    if state is None:
        return data, model, optimizer, reduction, 0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    print(f"[pexp] resuming {run.path} at epoch {state['epoch'] + 1}")
    return data, model, optimizer, reduction, int(state["epoch"]), list(state["log"])


def on_device(data: Dataset, device: torch.device) -> Dataset:
    """The data set with its inputs and targets on ``device`` (moved once; per-point extras stay where they are)."""
    return replace(data, train=replace(data.train, x=data.train.x.to(device), y=data.train.y.to(device)),
                   test=replace(data.test, x=data.test.x.to(device), y=data.test.y.to(device)))


def epochs_since_log(done: int, log_every: int) -> int:
    """How many epochs the log row written after epoch ``done`` covers."""
    return log_every if done % log_every == 0 else done % log_every


def log_row(cfg: DictConfig, run: RunDir, model: EntryNet, data: Dataset, done: int, eps: float, summed_loss: float,
            seen: int, seconds: float) -> dict:
    """The train_log.csv row after epoch ``done``: the mean loss over the ``seen`` epochs since the last row, the
    train and test errors now, and the seconds per epoch; stops the run when the loss is not finite."""
    mean_loss = summed_loss / (len(data.train.y) * seen)
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"training loss became {mean_loss} by epoch {done} of run {run.path}; "
                                 f"lower optim.lr or check the data")
    loss = Loss.from_config(cfg.loss)
    threshold, judged = loss.decision_threshold, loss.judged_model(model)
    return dict(epoch=done, eps=eps, loss=mean_loss,
                train_error=float(error_rate(judged, data.train.x, data.train.y, threshold).float().mean()),
                test_error=float(error_rate(judged, data.test.x, data.test.y, threshold).float().mean()),
                seconds=seconds)


def print_row(cfg: DictConfig, row: dict) -> None:
    print(f"[pexp] {cfg.run_name} epoch {row['epoch']}/{int(cfg.train.epochs)}: eps {row['eps']:.4f} loss "
          f"{row['loss']:.4f} train err {row['train_error']:.4f} test err {row['test_error']:.4f} "
          f"({row['seconds']:.3g} s/epoch)")


def save_progress(run: RunDir, model: EntryNet, optimizer: torch.optim.Optimizer, done: int,
                  rows: list[dict]) -> None:
    """checkpoint.pt (weights, optimiser state, epochs done, log rows) and train_log.csv, each atomically; and
    this sitting's seconds and passes so far (``RunDir.record_sitting``)."""
    torch_save(run / "checkpoint.pt", dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                                           epoch=done, log=rows))
    write_csv(run / "train_log.csv", pd.DataFrame(rows))
    run.record_sitting()


class MemoryFormat(StrEnum):
    """How a run's image batches are laid out in memory: ``auto`` channels-last where that is faster (images through
    a convolutional model on the CPU, :func:`pexp.models.prefers_channels_last`), ``contiguous`` PyTorch's default
    everywhere. It changes float rounding only, like the device or the CPU's kernels, so it is not hashed."""

    auto = "auto"
    contiguous = "contiguous"


class TargetSplit(StrEnum):
    train = "train"
    test = "test"


@dataclass
class TrainConfig:
    """The train group (conf/train/default.yaml); the keys after checkpoint_every are absent unless set."""

    epochs: int = integer(40, ge=1)
    batch_size: Optional[int] = integer(50, ge=1, null=True)  # null: full batch
    progress: Any = flag(True)  # tqdm bars (progress, log_every, checkpoint_every are not part of the run hash)
    log_every: Optional[int] = integer(1, ge=1, null=True)  # epochs between rows of train_log.csv
    checkpoint_every: Optional[int] = integer(1, ge=1, null=True)  # a multiple of log_every
    target_margin: Any = number(gt=0, null=True)  # the stop rule: stop_rule
    target_accuracy: Any = number(gt=0, le=1, null=True)
    target_split: Optional[TargetSplit] = UNSET
    target_check_every: Optional[int] = integer(ge=1, null=True)
    target_check_first: Optional[int] = integer(ge=1, null=True)
    keep_states: Any = flag()  # every epoch's weights, for the per-epoch evaluators
    memory_format: MemoryFormat = MemoryFormat.auto  # the layout of image batches (not hashed: like the device)


store(TrainConfig, "train", "train")


@cross_check("train")
def check_train(cfg: DictConfig) -> None:
    """What the schema cannot say: checkpoints fall on logged epochs."""
    log_every, checkpoint_every = cfg.train.get("log_every") or 1, cfg.train.get("checkpoint_every") or 1
    if checkpoint_every % log_every:
        raise ConfigError(f"train.checkpoint_every={checkpoint_every} is not allowed: must be a multiple of "
                          f"train.log_every={log_every}")


class StopRule(NamedTuple):
    """When a run stops before train.epochs (then a cap); see :func:`stop_rule`."""

    margin: float | None
    accuracy: float | None
    split: str
    every: int = 1
    first: int = 1

    @property
    def checked_always(self) -> bool:
        return self.every == 1 and self.first == 1

    def checked(self, done: int) -> bool:
        """Whether the rule is looked at after ``done`` epochs: after epochs first, first + every, ..."""
        return done >= self.first and (done - self.first) % self.every == 0


def stop_rule(cfg: DictConfig) -> StopRule:
    """train.target_margin, train.target_accuracy, train.target_split: stop once min_i y_i f(x_i) reaches the
    margin, or once the accuracy on the split (train | test) reaches the accuracy (paper OM, fig4); train.epochs is
    then a cap. train.target_check_every n (default 1) and train.target_check_first (default n): the rule is looked
    at only after epochs first, first + n, first + 2n, ... (the authors' MNIST script tests after epochs 1, 6, 11,
    ...: n = 5, first = 1; their sphere script after epochs 10, 20, ...: n = 10)."""
    every = int(cfg.train.get("target_check_every") or 1)
    return StopRule(cfg.train.get("target_margin"), cfg.train.get("target_accuracy"),
                    str(cfg.train.get("target_split", "train")), every,
                    int(cfg.train.get("target_check_first") or every))


def target_reached(rule: StopRule, model: EntryNet, data: Dataset, threshold: float,
                   judged: torch.nn.Module | None = None) -> bool:
    """Whether the run has met its :func:`stop_rule` now (False when it has none), whether or not the rule looks
    at this epoch; accuracies are those of ``judged`` (:func:`judged_model`, default the model)."""
    if rule.accuracy is not None:
        part = data.test if rule.split == "test" else data.train
        wrong = error_rate(judged if judged is not None else model, part.x, part.y, threshold)
        if 1 - float(wrong.float().mean()) >= rule.accuracy:
            return True
    return rule.margin is not None and \
        float(training_margin(model, data.train.x, data.train.y, threshold)) >= rule.margin


def _train_locked(cfg: DictConfig, run: RunDir) -> None:
    device = resolve_device(cfg.device)
    data, model, optimizer, reduction, start_epoch, rows = start_run(cfg, run, device)
    if cfg.train.get("memory_format", MemoryFormat.auto) == MemoryFormat.auto and \
            prefers_channels_last(model, data.train.x):  # the weights keep their values, only their layout changes
        model.to(memory_format=torch.channels_last)
        data = replace(data, **{name: replace(split, x=split.x.contiguous(memory_format=torch.channels_last))
                                for name, split in (("train", data.train), ("test", data.test))})
    keep_states = bool(cfg.train.get("keep_states", False))  # every epoch's weights, for per-epoch evaluators
    x_train, y_train = data.train.x, data.train.y
    loss = Loss.from_config(cfg.loss)  # read once: a DictConfig access costs tens of microseconds
    threshold = loss.decision_threshold
    active = active_layers(model, cfg.perturb.layers)
    epochs, n = int(cfg.train.epochs), len(y_train)
    batch_size = int(cfg.train.batch_size or n)  # null: full batch
    log_every, checkpoint_every = int(cfg.train.get("log_every", 1)), int(cfg.train.get("checkpoint_every", 1))
    batches = range(0, n, batch_size)
    penalty = float(cfg.optim.get("first_layer_penalty", 0.0))  # OM fig3 (c): + this x ||W_1|| in the loss
    penalty_form = str(cfg.optim.get("penalty_form", "norm"))
    rule, schedule = stop_rule(cfg), LrSchedule.of(cfg.optim)
    judged = loss.judged_model(model)
    loss.check_labels(y_train, cfg.data.name)
    # read once: a DictConfig access costs tens of microseconds, too much per epoch of a toy run
    pieces, progress = int(cfg.perturb.pieces), bool(cfg.train.progress)
    eps_max, ramp_steps, seed = float(cfg.perturb.eps), int(cfg.perturb.ramp_steps), int(cfg.seed)
    if start_epoch and rule.checked(start_epoch) and target_reached(rule, model, data, threshold, judged):
        start_epoch = epochs  # it had stopped at its target when interrupted: nothing left to train
    epoch_bar = tqdm(range(start_epoch, epochs), initial=start_epoch, total=epochs, desc=str(cfg.run_name),
                     unit="epoch", disable=not progress)
    started, total = time.perf_counter(), torch.zeros((), device=device)
    for epoch in epoch_bar:
        eps = eps_at_epoch(eps_max, epoch, epochs, ramp_steps)
        # the order is drawn on the host (the same on every device) and moved to the device once per epoch
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).to(
            device) if batch_size < n else None
        inner = tqdm(batches, desc=f"epoch {epoch + 1} eps={eps:.4f}", leave=False, unit="batch",
                     disable=not progress or len(batches) < 20)
        for number, first in enumerate(inner):
            if not schedule.constant:
                schedule.set(optimizer, epoch, epoch * len(batches) + number)
            if order is None:  # full batch
                x_batch, y_batch = x_train, y_train
            else:
                index = order[first:first + batch_size]
                x_batch, y_batch = x_train[index], y_train[index]
            total += training_step(model, optimizer, reduction, x_batch, y_batch, loss, eps, pieces, active,
                                   penalty, penalty_form)
        done = epoch + 1
        if keep_states:
            torch_save(state_path(run, done), model.state_dict())
        reached = rule.checked(done) and target_reached(rule, model, data, threshold, judged)
        final = reached or done == epochs
        if done % log_every and not final:
            continue
        seen = epochs_since_log(done, log_every)
        rows.append(log_row(cfg, run, model, data, done, eps, float(total), seen,
                            (time.perf_counter() - started) / seen))
        epoch_bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", train_err=f"{rows[-1]['train_error']:.4f}")
        if log_every == 1 or not progress:
            print_row(cfg, rows[-1])
        started, total = time.perf_counter(), torch.zeros((), device=device)
        if done % checkpoint_every == 0 or final:
            save_progress(run, model, optimizer, done, rows)
        if reached:
            break
    finish_run(cfg, run, model, data, rows)


def finish_run(cfg: DictConfig, run: RunDir, model: EntryNet, data: Dataset, rows: list[dict],
               extra: dict | None = None) -> dict:
    """model.pt, metrics.json (plus ``extra``) and the COMPLETE marker of a run whose training is done."""
    loss, target = Loss.from_config(cfg.loss), cfg.train.get("target_margin")
    threshold, x_train, y_train = loss.decision_threshold, data.train.x, data.train.y
    judged = loss.judged_model(model)
    test_wrong = error_rate(judged, data.test.x, data.test.y, threshold).cpu()
    lossless = data.test.extras.get("lossless", torch.ones_like(test_wrong))
    metrics = dict(
        data=data.source,
        input_shape=list(data.input_shape),
        decision_threshold=threshold,
        train_accuracy=1 - float(error_rate(judged, x_train, y_train, threshold).float().mean()),
        test_accuracy=1 - float(test_wrong.float().mean()),
        test_accuracy_lossless=(1 - float(test_wrong[lossless].float().mean())) if lossless.any() else None,
        n_test_lossless=int(lossless.sum()),
        seconds_per_epoch=float(pd.DataFrame(rows)["seconds"].mean()),
        epochs_trained=int(rows[-1]["epoch"]),
        **(extra or {}),
    )
    rule = stop_rule(cfg)
    if rule.accuracy is not None:
        metrics.update(target_accuracy=float(rule.accuracy), target_split=rule.split,
                       reached_target=target_reached(rule, model, data, threshold, judged))
        if not metrics["reached_target"]:
            print(f"[pexp] WARNING: {cfg.run_name} hit the epoch cap ({int(cfg.train.epochs)}) before {rule.split} "
                  f"accuracy {rule.accuracy} (recorded in metrics.json as reached_target=false)")
    elif target is not None:
        final_margin = float(training_margin(model, x_train, y_train, threshold))
        metrics.update(target_margin=float(target), final_margin=final_margin, reached_target=final_margin >= target)
        if final_margin < target:
            print(f"[pexp] WARNING: {cfg.run_name} hit the epoch cap ({int(cfg.train.epochs)}) before the target "
                  f"margin {target}: min y f(x) = {final_margin:.4f} (recorded in metrics.json as "
                  f"reached_target=false)")
    torch_save(run / "model.pt", dict(state_dict=model.state_dict(), input_shape=list(data.input_shape)))
    write_json(run / "metrics.json", metrics)
    run.mark_complete(metrics)
    print(f"[pexp] finished {run.path}: train acc {metrics['train_accuracy']:.4f}, "
          f"test acc {metrics['test_accuracy']:.4f}")
    return metrics


def load_trained(run: RunDir | Path | str, device: torch.device | str = "cpu") -> tuple[EntryNet, DictConfig]:
    """The final model of a finished run, and the run's config."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    if not run.complete:
        raise ConfigError(f"run={str(run.path)!r} is not a finished training run (no {run.path}/COMPLETE)")
    cfg = OmegaConf.load(run / "config.yaml")
    saved = torch.load(run / "model.pt", map_location=device, weights_only=False)
    model = build_model(cfg.model, saved["input_shape"]).to(device)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), cfg
