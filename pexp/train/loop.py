"""The one training loop of pexp: pluggable loss, perturbation strategy (Algorithm 1) and optimiser rule."""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from pexp.config import ConfigError, resolve_device, validate_training
from pexp.data import Dataset, load_dataset
from pexp.models import EntryNet, build_model, predict, score
from pexp.runs import RunDir, torch_save, training_run_dir, write_csv, write_json, write_text
from pexp.train.optim import build_optimizer
from pexp.train.perturb import active_layers, eps_at_epoch, extreme_perturbations


LOSSES = ("mse", "ce", "logistic")


def per_sample_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: DictConfig) -> torch.Tensor:
    """One value per sample, on the outputs divided by ``loss.output_divisor`` (default 1):
    mse: (f - t_y)^2 with t = ``loss.targets`` (default 0/1); ce: cross-entropy on logits;
    logistic: binary cross-entropy of sigmoid(f) against the 0/1 target."""
    outputs = outputs / float(loss.get("output_divisor", 1))
    if loss.name == "mse":
        values = torch.as_tensor(list(loss.get("targets", (0.0, 1.0))), dtype=outputs.dtype, device=outputs.device)
        return (outputs[:, 0] - values[targets]) ** 2
    if loss.name == "logistic":
        return F.binary_cross_entropy_with_logits(outputs[:, 0], targets.to(outputs.dtype), reduction="none")
    return F.cross_entropy(outputs, targets, reduction="none")


def decision_threshold(loss: DictConfig) -> float:
    """Where a one-output model's decision flips, on the raw output: the midpoint of the squared-error targets
    (0.5 for 0/1) times the output divisor; 0 for the logistic loss."""
    if loss.name == "mse":
        low, high = loss.get("targets", (0.0, 1.0))
        return float(loss.get("output_divisor", 1)) * (low + high) / 2
    return 0.0


def training_step(model: EntryNet, optimizer: torch.optim.Optimizer, reduction: str, x: torch.Tensor,
                  y: torch.Tensor, loss: DictConfig, eps: float, pieces: int, active: list[bool],
                  first_layer_penalty: float = 0.0) -> torch.Tensor:
    """One update; returns the summed loss of the batch (detached). With perturbations (Algorithm 1) each
    sample's loss is the sum of its losses at the argmax- and argmin-perturbed forward passes.
    ``first_layer_penalty`` adds that times the l2 (Frobenius) norm of the first affine layer's weights."""
    if any(active) and eps > 0:
        perturbations = extreme_perturbations(model, x, eps, pieces, active)
        losses = per_sample_loss(model(torch.cat([x, x]), perturbations), torch.cat([y, y]), loss)
    elif any(active):  # Algorithm 1 at radius 0: both perturbed passes are the clean pass
        losses = 2 * per_sample_loss(model(x), y, loss)
    else:
        losses = per_sample_loss(model(x), y, loss)
    total = losses.sum()
    objective = total if reduction == "sum" else total / x.shape[0]
    if first_layer_penalty:
        objective = objective + first_layer_penalty * model.affine(model.layer_names[0]).weight.norm()
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


def _train_locked(cfg: DictConfig, run: RunDir) -> None:
    device = resolve_device(cfg.device)
    data: Dataset = load_dataset(cfg.data)
    torch.manual_seed(int(cfg.seed))
    model = build_model(cfg.model, data.input_shape, cfg.init).to(device)
    optimizer, reduction = build_optimizer(cfg.optim, model.parameters())
    write_text(run / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    keep_states = bool(cfg.train.get("keep_states", False))  # every epoch's weights, for per-epoch evaluators
    if keep_states and not state_path(run, 0).exists():
        torch_save(state_path(run, 0), model.state_dict())  # epoch 0: the init (the same on every attempt)

    rows: list[dict] = []
    start_epoch = 0
    state = _load_checkpoint(run / "checkpoint.pt")
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, rows = state["epoch"], state["log"]
        print(f"[pexp] resuming {run.path} at epoch {start_epoch + 1}")

    x_train, y_train = data.train.x.to(device), data.train.y.to(device)
    x_test, y_test = data.test.x.to(device), data.test.y.to(device)
    threshold = decision_threshold(cfg.loss)
    active = active_layers(model, cfg.perturb.layers)
    epochs, n = int(cfg.train.epochs), len(y_train)
    batch_size = int(cfg.train.batch_size or n)  # null: full batch
    log_every, checkpoint_every = int(cfg.train.get("log_every", 1)), int(cfg.train.get("checkpoint_every", 1))
    batches = range(0, n, batch_size)
    penalty = float(cfg.optim.get("first_layer_penalty", 0.0))  # OM fig3 (c): + this x ||W_1||_2 in the loss
    target = cfg.train.get("target_margin")  # stop once min_i y_i f(x_i) reaches it; train.epochs is then a cap
    if state is not None and target is not None and float(training_margin(model, x_train, y_train,
                                                                           threshold)) >= target:
        start_epoch = epochs  # it had stopped at its target when interrupted: nothing left to train
    epoch_bar = tqdm(range(start_epoch, epochs), initial=start_epoch, total=epochs, desc=str(cfg.run_name),
                     unit="epoch", disable=not cfg.train.progress)
    started, total = time.perf_counter(), torch.zeros((), device=device)
    for epoch in epoch_bar:
        eps = eps_at_epoch(cfg.perturb.eps, epoch, epochs, int(cfg.perturb.ramp_steps))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + epoch)) \
            if batch_size < n else None
        inner = tqdm(batches, desc=f"epoch {epoch + 1} eps={eps:.4f}", leave=False, unit="batch",
                     disable=not cfg.train.progress or len(batches) < 20)
        for first in inner:
            if order is None:  # full batch
                x_batch, y_batch = x_train, y_train
            else:
                index = order[first:first + batch_size].to(device)
                x_batch, y_batch = x_train[index], y_train[index]
            total += training_step(model, optimizer, reduction, x_batch, y_batch, cfg.loss, eps,
                                   int(cfg.perturb.pieces), active, penalty)
        done = epoch + 1
        if keep_states:
            torch_save(state_path(run, done), model.state_dict())
        reached = target is not None and float(training_margin(model, x_train, y_train, threshold)) >= target
        final = reached or done == epochs
        if done % log_every and not final:
            continue
        seen = log_every if done % log_every == 0 else done % log_every
        mean_loss = float(total) / (n * seen)
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"training loss became {mean_loss} by epoch {done} of run {run.path}; "
                                     f"lower optim.lr or check the data")
        seconds = (time.perf_counter() - started) / seen
        rows.append(dict(epoch=done, eps=eps, loss=mean_loss,
                         train_error=float(error_rate(model, x_train, y_train, threshold).float().mean()),
                         test_error=float(error_rate(model, x_test, y_test, threshold).float().mean()),
                         seconds=seconds))
        epoch_bar.set_postfix(loss=f"{mean_loss:.4f}", train_err=f"{rows[-1]['train_error']:.4f}")
        if log_every == 1 or not cfg.train.progress:
            print(f"[pexp] {cfg.run_name} epoch {done}/{epochs}: eps {eps:.4f} loss {mean_loss:.4f} "
                  f"train err {rows[-1]['train_error']:.4f} test err {rows[-1]['test_error']:.4f} "
                  f"({seconds:.3g} s/epoch)")
        started, total = time.perf_counter(), torch.zeros((), device=device)
        if done % checkpoint_every == 0 or final:
            torch_save(run / "checkpoint.pt", dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                                                   epoch=done, log=rows))
            write_csv(run / "train_log.csv", pd.DataFrame(rows))
        if reached:
            break

    test_wrong = error_rate(model, x_test, y_test, threshold).cpu()
    lossless = data.test.extras.get("lossless", torch.ones_like(test_wrong))
    metrics = dict(
        data=data.source,
        input_shape=list(data.input_shape),
        decision_threshold=threshold,
        train_accuracy=1 - float(error_rate(model, x_train, y_train, threshold).float().mean()),
        test_accuracy=1 - float(test_wrong.float().mean()),
        test_accuracy_lossless=(1 - float(test_wrong[lossless].float().mean())) if lossless.any() else None,
        n_test_lossless=int(lossless.sum()),
        seconds_per_epoch=float(pd.DataFrame(rows)["seconds"].mean()),
        epochs_trained=int(rows[-1]["epoch"]),
    )
    if target is not None:
        final_margin = float(training_margin(model, x_train, y_train, threshold))
        metrics.update(target_margin=float(target), final_margin=final_margin, reached_target=final_margin >= target)
        if final_margin < target:
            print(f"[pexp] WARNING: {cfg.run_name} hit the epoch cap ({epochs}) before the target margin {target}: "
                  f"min y f(x) = {final_margin:.4f} (recorded in metrics.json as reached_target=false)")
    torch_save(run / "model.pt", dict(state_dict=model.state_dict(), input_shape=list(data.input_shape)))
    write_json(run / "metrics.json", metrics)
    run.mark_complete(metrics)
    print(f"[pexp] finished {run.path}: train acc {metrics['train_accuracy']:.4f}, "
          f"test acc {metrics['test_accuracy']:.4f}")


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
