"""What the bench (``bench.py``) and its child processes (``throughput_probe.py``) share: the Algorithm 1 settings
of the timed slices, the PE-net they train and the timer."""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
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
