"""An independent check of finished margins with another library's attacks (torchattacks 3.5.1).

For a seeded sample of the evaluated points of each split and each radius r, the points our search put above r
(margin > r: "not flippable within r") are attacked at r by torchattacks' APGD (cross-entropy, random starts) and
then, on what it leaves, by its Square attack (gradient-free, random search). Every point they flip is a point
whose margin we overstated. The censored points (not flipped within eps_max) are attacked the same way at eps_max.
Nothing here feeds the margins: the check only counts, and the margin figures show its counts as a diagnostic.

torchattacks works on inputs in [0, 1] with one scalar radius; the model is seen through the fixed affine map
from [0, 1] onto the eval's box (a radius r becomes r / (high - low)), so no per-point frame of ours is involved.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from pexp.config import resolve_device
from pexp.data import load_dataset
from pexp.eval.evaluate import evaluate
from pexp.eval.evaluators.common import eval_dir
from pexp.eval.margin import SearchSettings
from pexp.runs import RunDir, write_csv
from pexp.losses import Loss
from pexp.train.loop import load_trained

CROSSCHECK = "crosscheck.csv"  # written into the margin evaluation's folder, beside results.csv


@dataclass(frozen=True)
class CrossCheck:
    """The check's settings (a reader re-running it with other values passes them here)."""

    radii: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)
    n_points: int = 300         # per split, a seeded random sample of the evaluated points
    seed: int = 0
    apgd_steps: int = 100
    apgd_restarts: int = 2
    square_queries: int = 5000
    batch_size: int = 500


class _UnitBox(nn.Module):
    """``model`` on [0, 1]: u -> model(low + (high - low) u)."""

    def __init__(self, model: nn.Module, low: float, high: float):
        super().__init__()
        self.model, self.low, self.scale = model, low, high - low

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.low + self.scale * u)


def _flipped(attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:  # noqa: ANN001
    """Which points ``attack`` turns into an error of ``model`` (checked on the model, not on the attack's word)."""
    out = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        adversarial = attack(xb, yb)
        with torch.no_grad():
            out.append(model(adversarial).argmax(1) != yb)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def crosscheck_split(logits: nn.Module, x: torch.Tensor, y: torch.Tensor, margins: torch.Tensor,
                     bounds: tuple[float, float], eps_max: float, check: CrossCheck = CrossCheck(),
                     progress: bool = False) -> pd.DataFrame:
    """One split: ``x, y`` the evaluated points, ``margins`` ours (inf: censored). One row per radius on a seeded
    sample of ``check.n_points``, and one for all the censored points at ``eps_max``: points looked at, points we
    put above the radius (and classified right), flipped by APGD, flipped by Square after APGD, and their sum."""
    import torchattacks  # deferred: ~0.5 s to import (scipy.optimize and more), needed by this check only

    low, high = bounds
    model = _UnitBox(logits, low, high).eval()
    u = ((x - low) / (high - low)).clamp(0, 1)
    with torch.no_grad():
        right = torch.cat([model(u[i:i + check.batch_size]).argmax(1) for i in range(0, len(u), check.batch_size)]) == y
    right, margins = right.cpu(), margins.cpu()  # the masks live on the CPU; the points on the model's device
    in_sample = torch.zeros(len(x), dtype=torch.bool)
    in_sample[torch.randperm(len(x), generator=torch.Generator().manual_seed(check.seed))[:check.n_points]] = True
    rows = []
    cases = [(r, "sample", in_sample, in_sample & (margins > r) & right) for r in check.radii]
    cases.append((eps_max, "censored", torch.isinf(margins), torch.isinf(margins) & right))
    for radius, points, looked, claimed in tqdm(cases, desc="cross-check", disable=not progress, leave=False):
        eps = radius / (high - low)
        apgd = torchattacks.APGD(model, norm="Linf", eps=eps, steps=check.apgd_steps,
                                 n_restarts=check.apgd_restarts, loss="ce", seed=check.seed)
        square = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=check.square_queries, n_restarts=1,
                                     loss="margin", seed=check.seed)
        index = claimed.nonzero().flatten()
        by_apgd = _flipped(apgd, model, u[index], y[index], check.batch_size)
        left = index[~by_apgd]
        by_square = _flipped(square, model, u[left], y[left], check.batch_size)
        rows.append(dict(points=points, radius=radius, looked_at=int(looked.sum()), claimed_above=len(index),
                         apgd_flipped=int(by_apgd.sum()), square_flipped=int(by_square.sum()),
                         flipped=int(by_apgd.sum() + by_square.sum())))
    return pd.DataFrame(rows)


def crosscheck_margins(run: RunDir, eval_cfg: DictConfig, device: str = "auto", check: CrossCheck = CrossCheck(),
                       progress: bool = True) -> pd.DataFrame:
    """The check of a finished margin evaluation of ``run`` (``eval_cfg``), both splits, cached as
    ``crosscheck.csv`` in the evaluation's folder (written atomically; delete it to check again)."""
    out = eval_dir(run, eval_cfg)
    if (out / CROSSCHECK).exists():
        return pd.read_csv(out / CROSSCHECK)
    results = evaluate(run, eval_cfg, device, progress)
    model, cfg = load_trained(run, resolve_device(device))
    data = load_dataset(cfg.data)
    logits = Loss.from_config(cfg.loss).as_logits(model)
    bounds = SearchSettings.from_config(eval_cfg).bounds  # the box the margin search attacked in
    frames = []
    for name, split in (("train", data.train), ("test", data.test)):
        part = results[results.split == name]
        index = torch.as_tensor(part["index"].to_numpy())
        sub = split.subset(index)
        margins = torch.as_tensor(part["margin"].to_numpy(), dtype=torch.float32)
        device_of = next(model.parameters()).device
        found = crosscheck_split(logits, sub.x.to(device_of), sub.y.to(device_of), margins, bounds,
                                 float(eval_cfg.eps_max), check, progress)
        frames.append(found.assign(split=name))
    frame = pd.concat(frames, ignore_index=True)
    write_csv(out / CROSSCHECK, frame)
    return frame
