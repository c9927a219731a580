"""The one training loop of pexp: pluggable loss, perturbation strategy (Algorithm 1) and optimiser rule."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from pexp.config import resolve_device, validate_training
from pexp.data import Dataset, load_dataset
from pexp.models import EntryNet, build_model, predict
from pexp.runs import RunDir, torch_save, training_run_dir, write_csv, write_json, write_text
from pexp.train.optim import build_optimizer
from pexp.train.perturb import active_layers, eps_at_epoch, extreme_perturbations


def per_sample_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """Squared error (f(x) - y)^2 on one output, or cross-entropy on logits; one value per sample."""
    if loss == "mse":
        return (outputs[:, 0] - targets.to(outputs.dtype)) ** 2
    return F.cross_entropy(outputs, targets, reduction="none")


def training_step(model: EntryNet, optimizer: torch.optim.Optimizer, reduction: str, x: torch.Tensor,
                  y: torch.Tensor, loss: str, eps: float, pieces: int, active: list[bool]) -> torch.Tensor:
    """One update; returns the summed loss of the batch (detached). With perturbations (Algorithm 1) each
    sample's loss is the sum of its losses at the argmax- and argmin-perturbed forward passes."""
    if any(active) and eps > 0:
        perturbations = extreme_perturbations(model, x, eps, pieces, active)
        losses = per_sample_loss(model(torch.cat([x, x]), perturbations), torch.cat([y, y]), loss)
    elif any(active):  # Algorithm 1 at radius 0: both perturbed passes are the clean pass
        losses = 2 * per_sample_loss(model(x), y, loss)
    else:
        losses = per_sample_loss(model(x), y, loss)
    total = losses.sum()
    optimizer.zero_grad(set_to_none=True)
    (total if reduction == "sum" else total / x.shape[0]).backward()
    optimizer.step()
    return total.detach()


@torch.no_grad()
def error_rate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Per-point misclassification (bool) of clean inputs."""
    wrong = [predict(model(x[i:i + batch_size])) != y[i:i + batch_size] for i in range(0, len(y), batch_size)]
    return torch.cat(wrong) if wrong else torch.zeros(0, dtype=torch.bool)


def _load_checkpoint(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - a truncated or corrupted checkpoint is redone, not trusted
        warnings.warn(f"checkpoint {path} is unreadable ({type(error).__name__}); starting this run again",
                      stacklevel=2)
        return None


def train(cfg: DictConfig) -> RunDir:
    """Train the run ``cfg`` describes, or reuse it when finished; resume from its checkpoint when interrupted."""
    validate_training(cfg)
    run = training_run_dir(cfg)
    if run.complete:
        print(f"[pexp] reusing finished run {run.path}")
        return run
    with run.lock():
        if run.complete:  # finished by another process while we waited
            return run
        _train_locked(cfg, run)
    return run


def _train_locked(cfg: DictConfig, run: RunDir) -> None:
    device = resolve_device(cfg.device)
    data: Dataset = load_dataset(cfg.data)
    torch.manual_seed(int(cfg.seed))
    model = build_model(cfg.model, data.input_shape, cfg.init).to(device)
    optimizer, reduction = build_optimizer(cfg.optim, model.parameters())
    write_text(run / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

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
    active = active_layers(model, cfg.perturb.layers)
    epochs, batch_size, n = int(cfg.train.epochs), int(cfg.train.batch_size), len(y_train)
    for epoch in range(start_epoch, epochs):
        eps = eps_at_epoch(cfg.perturb.eps, epoch, epochs, int(cfg.perturb.ramp_steps))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + epoch))
        started, total = time.perf_counter(), torch.zeros((), device=device)
        bar = tqdm(range(0, n, batch_size), desc=f"{cfg.run_name} epoch {epoch + 1}/{epochs} eps={eps:.4f}",
                   leave=False, disable=not cfg.train.progress, unit="batch")
        for first in bar:
            index = order[first:first + batch_size].to(device)
            total += training_step(model, optimizer, reduction, x_train[index], y_train[index], cfg.loss.name,
                                   eps, int(cfg.perturb.pieces), active)
        mean_loss = float(total) / n
        if not torch.isfinite(torch.tensor(mean_loss)):
            raise FloatingPointError(f"training loss became {mean_loss} in epoch {epoch + 1} of run {run.path}; "
                                     f"lower optim.lr or check the data")
        seconds = time.perf_counter() - started
        rows.append(dict(epoch=epoch + 1, eps=eps, loss=mean_loss,
                         train_error=float(error_rate(model, x_train, y_train).float().mean()),
                         test_error=float(error_rate(model, x_test, y_test).float().mean()), seconds=seconds))
        print(f"[pexp] {cfg.run_name} epoch {epoch + 1}/{epochs}: eps {eps:.4f} loss {mean_loss:.4f} "
              f"train err {rows[-1]['train_error']:.4f} test err {rows[-1]['test_error']:.4f} ({seconds:.1f}s)")
        torch_save(run / "checkpoint.pt", dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                                               epoch=epoch + 1, log=rows))
        write_csv(run / "train_log.csv", pd.DataFrame(rows))

    test_wrong = error_rate(model, x_test, y_test).cpu()
    lossless = data.test.extras.get("lossless", torch.ones_like(test_wrong))
    metrics = dict(
        data=data.source,
        input_shape=list(data.input_shape),
        train_accuracy=1 - float(error_rate(model, x_train, y_train).float().mean()),
        test_accuracy=1 - float(test_wrong.float().mean()),
        test_accuracy_lossless=(1 - float(test_wrong[lossless].float().mean())) if lossless.any() else None,
        n_test_lossless=int(lossless.sum()),
        seconds_per_epoch=float(pd.DataFrame(rows)["seconds"].mean()),
    )
    torch_save(run / "model.pt", dict(state_dict=model.state_dict(), input_shape=list(data.input_shape)))
    write_json(run / "metrics.json", metrics)
    run.mark_complete(metrics)
    print(f"[pexp] finished {run.path}: train acc {metrics['train_accuracy']:.4f}, "
          f"test acc {metrics['test_accuracy']:.4f}")


def load_trained(run: RunDir | Path | str, device: torch.device | str = "cpu") -> tuple[EntryNet, DictConfig]:
    """The final model of a finished run, and the run's config."""
    from pexp.config import ConfigError

    run = run if isinstance(run, RunDir) else RunDir(run)
    if not run.complete:
        raise ConfigError(f"run={str(run.path)!r} is not a finished training run (no {run.path}/COMPLETE)")
    cfg = OmegaConf.load(run / "config.yaml")
    saved = torch.load(run / "model.pt", map_location=device, weights_only=False)
    model = build_model(cfg.model, saved["input_shape"]).to(device)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), cfg
