"""What the bench (``bench.py``) and its child processes (``throughput_probe.py``) share: the Algorithm 1 settings
of the timed slices, the PE-net they train and the timer."""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
from torch import nn
from omegaconf import OmegaConf

from pexp.models import EntryNet, build_model

EPS, PIECES, BATCH, LR, MOMENTUM = 0.02, 4, 50, 1e-3, 0.9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call (CUDA work included)."""
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def pe_net(size: int, input_shape: Sequence[int], seed: int = 0) -> EntryNet:
    torch.manual_seed(seed)
    return build_model(OmegaConf.create(dict(name="pe_net", size=size, outputs=1, negative_slope=0.01)),
                       input_shape)


class CountingModel(nn.Module):
    """Counts the points that pass through ``model``: with a gradient to the input (a forward-backward pass of
    an attack step) or without (a check)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.with_gradient = 0
        self.without_gradient = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            self.with_gradient += len(x)
        else:
            self.without_gradient += len(x)
        return self.model(x)

    def reset(self) -> None:
        self.with_gradient = self.without_gradient = 0
