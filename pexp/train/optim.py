"""Optimisers: the authors' summed-gradient momentum rule, and plain SGD; their update as one function that the
single-run optimisers and the batched toy ensemble (``pexp.train.ensemble``) share."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Iterable, Optional

import torch
from omegaconf import DictConfig

from pexp.schema import UNSET, integer, integers, number, store

Hyper = float | torch.Tensor  # a float, or one value per ensemble member (broadcastable to the parameter)


class OptimName(StrEnum):
    summed_momentum = "summed_momentum"  # the authors' rule on the summed gradient (SummedMomentum)
    sgd = "sgd"  # torch.optim.SGD


class PenaltyForm(StrEnum):
    """The first layer's penalty (times ``first_layer_penalty``): its weights' norm, the norm with the biases,
    or half the squared norm."""

    norm = "norm"
    norm_with_bias = "norm_with_bias"
    half_squared = "half_squared"


class Reduction(StrEnum):
    mean = "mean"
    sum = "sum"


@dataclass
class OptimConfig:
    """The optim group (conf/optim/*.yaml); the optional keys below are absent unless a config sets them."""

    name: OptimName = OptimName.summed_momentum
    lr: Any = number(1e-3, gt=0)
    momentum: Any = number(0.9, ge=0, lt=1)
    weight_decay: Any = number(0.0, ge=0)
    first_layer_penalty: Any = number(ge=0, null=True)  # default 0: no penalty
    penalty_form: Optional[PenaltyForm] = UNSET  # default norm
    reduction: Optional[Reduction] = UNSET  # sgd's batch loss: its mean (default) or its sum
    lr_milestones: Any = integers(ge=1, distinct=True, null=True)  # the schedule: LrSchedule
    lr_milestone_factor: Any = number(gt=0, null=True)
    lr_step_every: Optional[int] = integer(ge=1, null=True)
    lr_step_factor: Any = number(gt=0, null=True)


store(OptimConfig, "optim", "optim")


def _add_scaled(target: torch.Tensor, other: torch.Tensor, factor: Hyper, inplace: bool = True) -> torch.Tensor:
    """target + factor * other (in place unless ``inplace`` is false), rounded as torch's
    ``add_(other, alpha=factor)`` (one fused multiply-add) whether ``factor`` is a float or a tensor of per-member
    values."""
    if isinstance(factor, torch.Tensor):
        return target.addcmul_(other, factor) if inplace else torch.addcmul(target, other, factor)
    return target.add_(other, alpha=factor) if inplace else target.add(other, alpha=factor)


@torch.no_grad()
def momentum_update(param: torch.Tensor, grad: torch.Tensor, buffer: torch.Tensor | None, lr: Hyper,
                    momentum: Hyper, undamped: Hyper, weight_decay: Hyper) -> None:
    """One step, in place: g = grad + weight_decay * param; buffer <- momentum * buffer + undamped * g;
    param <- param - lr * buffer (without a buffer: param <- param - lr * g, torch.optim.SGD without momentum).
    torch.optim.SGD is undamped = 1 with a zero-initialised buffer (its first step sets the buffer to g: the same
    numbers); :class:`SummedMomentum` is undamped = 1 - momentum. Per-member tensors must hold values computed in
    float64 (e.g. 1 - momentum), as torch rounds its float arguments."""
    if isinstance(weight_decay, torch.Tensor) or weight_decay:
        grad = _add_scaled(grad, param, weight_decay, inplace=False)
    if buffer is not None:
        grad = _add_scaled(buffer.mul_(momentum), grad, undamped)
    _add_scaled(param, grad, -lr)


class SummedMomentum(torch.optim.Optimizer):
    """buffer <- momentum * buffer + (1 - momentum) * (g + weight_decay * theta); theta <- theta - lr * buffer.

    ``g`` is the gradient of the *summed* batch loss (the authors' rule). Unlike torch.optim.SGD with dampening,
    the first step also uses the (1 - momentum) factor (the buffer starts at zero).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, momentum: float, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if "buffer" not in state:
                    state["buffer"] = torch.zeros_like(param)
                momentum_update(param, param.grad, state["buffer"], group["lr"], group["momentum"],
                                1 - group["momentum"], group["weight_decay"])


def build_optimizer(cfg: DictConfig, params: Iterable[torch.nn.Parameter]) -> tuple[torch.optim.Optimizer, str]:
    """The optimiser and the batch-loss reduction it expects ('sum' or 'mean')."""
    if cfg.name == "summed_momentum":
        return SummedMomentum(params, cfg.lr, cfg.momentum, cfg.weight_decay), "sum"
    reduction = cfg.get("reduction", "mean")  # the batch loss plain SGD descends: its mean (default) or its sum
    # foreach: one call per step for all parameters instead of a Python loop over them (the same numbers, checked
    # bit for bit); it matters for pe-fig4's one-sample steps
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           foreach=True), reduction


@dataclass(frozen=True)
class LrSchedule:
    """The learning rate at each optimiser step, from the optional keys of the optim config (absent: constant):

    - ``lr_milestones`` (epochs, e.g. [40, 80]) and ``lr_milestone_factor`` (default 0.1): the rate is multiplied by
      the factor once each milestone's number of epochs is done (the epoch after epoch 40 runs at 0.1 lr; torch's
      MultiStepLR stepped once per epoch);
    - ``lr_step_every`` (optimiser steps) and ``lr_step_factor``: the rate is multiplied by the factor after every
      that many steps (torch's StepLR stepped once per optimiser step).
    Epochs and steps count from 0, so the rate of a step follows from them alone (a resumed run gets the same)."""

    lr: float
    milestones: tuple[int, ...] = ()
    milestone_factor: float = 0.1
    step_every: int | None = None
    step_factor: float = 1.0

    @staticmethod
    def of(cfg: DictConfig) -> LrSchedule:
        every = cfg.get("lr_step_every")
        return LrSchedule(float(cfg.lr), tuple(int(m) for m in cfg.get("lr_milestones") or ()),
                          float(cfg.get("lr_milestone_factor", 0.1)), None if every is None else int(every),
                          float(cfg.get("lr_step_factor", 1.0)))

    @property
    def constant(self) -> bool:
        return not self.milestones and (self.step_every is None or self.step_factor == 1.0)

    def at(self, epoch: int, step: int) -> float:
        """The rate of optimiser step ``step`` (0-based, counted over the whole run), taken in epoch ``epoch``
        (0-based). Multiplied one factor at a time, as the torch schedulers do (the same rounding)."""
        rate = self.lr
        for _ in range(sum(epoch >= milestone for milestone in self.milestones)):
            rate *= self.milestone_factor
        for _ in range(step // self.step_every if self.step_every else 0):
            rate *= self.step_factor
        return rate

    def set(self, optimizer: torch.optim.Optimizer, epoch: int, step: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = self.at(epoch, step)


def update_rule(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The arguments (lr, momentum, undamped, weight_decay) of :func:`momentum_update` that reproduce
    ``optimizer`` (built by :func:`build_optimizer`; one parameter group)."""
    group = optimizer.param_groups[0]
    if not isinstance(optimizer, SummedMomentum) and (group.get("nesterov") or group.get("maximize")):
        raise ValueError("momentum_update has no Nesterov or maximising variant")
    undamped = 1 - (group["momentum"] if isinstance(optimizer, SummedMomentum) else group.get("dampening", 0.0))
    return dict(lr=group["lr"], momentum=group["momentum"], undamped=undamped, weight_decay=group["weight_decay"])


def keeps_momentum(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimiser keeps a momentum buffer (torch.optim.SGD without momentum keeps none)."""
    return _buffer_key(optimizer) is not None


def _buffer_key(optimizer: torch.optim.Optimizer) -> str | None:
    if isinstance(optimizer, SummedMomentum):
        return "buffer"
    return "momentum_buffer" if optimizer.param_groups[0]["momentum"] else None  # SGD keeps none without momentum


def momentum_buffers(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Each parameter's momentum buffer (zeros where the optimiser has none yet: the same next step)."""
    key = _buffer_key(optimizer)
    buffers = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            buffer = optimizer.state.get(param, {}).get(key) if key else None
            buffers.append(torch.zeros_like(param) if buffer is None else buffer.detach().clone())
    return buffers


def set_momentum_buffers(optimizer: torch.optim.Optimizer, buffers: Iterable[torch.Tensor]) -> None:
    """Give each parameter these momentum buffers (what ``optimizer.state_dict()`` then saves). Without momentum,
    torch.optim.SGD keeps no state: nothing is set."""
    key = _buffer_key(optimizer)
    if key is None:
        return
    params = [param for group in optimizer.param_groups for param in group["params"]]
    for param, buffer in zip(params, buffers):
        optimizer.state[param][key] = buffer.detach().clone().to(param)
