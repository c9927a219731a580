"""Optimisers: the authors' summed-gradient momentum rule, and plain SGD."""
from __future__ import annotations

from typing import Iterable

import torch
from omegaconf import DictConfig


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
                grad = param.grad
                if group["weight_decay"]:
                    grad = grad.add(param, alpha=group["weight_decay"])
                state = self.state[param]
                if "buffer" not in state:
                    state["buffer"] = torch.zeros_like(param)
                buffer = state["buffer"]
                buffer.mul_(group["momentum"]).add_(grad, alpha=1 - group["momentum"])
                param.add_(buffer, alpha=-group["lr"])


def build_optimizer(cfg: DictConfig, params: Iterable[torch.nn.Parameter]) -> tuple[torch.optim.Optimizer, str]:
    """The optimiser and the batch-loss reduction it expects ('sum' or 'mean')."""
    if cfg.name == "summed_momentum":
        return SummedMomentum(params, cfg.lr, cfg.momentum, cfg.weight_decay), "sum"
    reduction = cfg.get("reduction", "mean")  # the batch loss plain SGD descends: its mean (default) or its sum
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay), reduction
