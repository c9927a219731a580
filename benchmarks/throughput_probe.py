"""Row 6 of the bench, one thread setting: ``python benchmarks/throughput_probe.py SIZE SAMPLES`` prints the best
of 3 batched Algorithm 1 slices in samples/s. ``bench.py`` starts it once per setting, each a fresh process
(OpenMP reads its environment once)."""
from __future__ import annotations

import sys

import torch
from common import BATCH, EPS, LR, MOMENTUM, PIECES, pe_net, timed  # beside this script
from pexp.losses import SquaredError
from pexp.train.loop import training_step
from pexp.train.optim import SummedMomentum
from pexp.train.perturb import active_layers


def throughput(size: int, samples: int) -> float:
    loss = SquaredError()
    model = pe_net(size, (3, 32, 32))
    optimizer = SummedMomentum(model.parameters(), lr=LR, momentum=MOMENTUM)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(samples, 3, 32, 32, generator=generator) * 2 - 1, torch.randint(0, 2, (samples,))
    active = active_layers(model, "all")

    def slice_() -> None:
        for first in range(0, samples, BATCH):
            training_step(model, optimizer, "sum", x[first:first + BATCH], y[first:first + BATCH], loss, EPS,
                          PIECES, active)
    slice_()
    return samples / min(timed(slice_, torch.device("cpu")) for _ in range(3))


if __name__ == "__main__":
    print(throughput(int(sys.argv[1]), int(sys.argv[2])))
