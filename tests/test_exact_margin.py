"""Exact 2D margins of one-hidden-layer (leaky) ReLU networks equal a brute-force search on a fine grid."""
import math

import numpy as np
import pytest
import torch

from pexp.eval.geometry import exact_margins_2d
from pexp.models import Block, EntryNet, score
from torch import nn


def small_net(seed: int, width: int, outputs: int = 1, slope: float = 0.0) -> EntryNet:
    torch.manual_seed(seed)
    activation = nn.ReLU() if slope == 0 else nn.LeakyReLU(slope)
    net = EntryNet([Block(nn.Linear(2, width), activation), Block(nn.Linear(width, outputs))], ["fc1", "fc2"], (2,))
    with torch.no_grad():
        net.blocks[0].affine.bias.mul_(3.0)  # lines spread over the box
    return net.double().eval()


def brute_force(net: EntryNet, points: torch.Tensor, threshold: float, half: float = 4.0, n: int = 1601):
    """Distance from each point to the zero crossings of score - threshold along the edges of a fine grid."""
    axis = torch.linspace(-half, half, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    mesh = torch.stack([gx.flatten(), gy.flatten()], 1)
    with torch.no_grad():
        values = (score(net(mesh)) - threshold).reshape(n, n)
    crossings = []
    for va, vb, pa, pb in ((values[:, :-1], values[:, 1:], mesh.reshape(n, n, 2)[:, :-1], mesh.reshape(n, n, 2)[:, 1:]),
                           (values[:-1], values[1:], mesh.reshape(n, n, 2)[:-1], mesh.reshape(n, n, 2)[1:])):
        change = (va > 0) != (vb > 0)
        t = (va / (va - vb))[change]
        crossings.append(pa[change] + t[:, None] * (pb[change] - pa[change]))
    crossings = torch.cat(crossings)
    return torch.cdist(points, crossings).amin(1), float(axis[1] - axis[0])


@pytest.mark.parametrize("seed,width,outputs,slope", [(0, 5, 1, 0.0), (1, 12, 1, 0.0), (2, 20, 2, 0.0),
                                                       (3, 8, 1, 0.1), (4, 20, 1, 0.0)])
def test_exact_margin_equals_brute_force_grid(seed, width, outputs, slope):
    net = small_net(seed, width, outputs, slope)
    generator = torch.Generator().manual_seed(seed + 100)
    points = (torch.rand(40, 2, generator=generator, dtype=torch.float64) - 0.5) * 3
    with torch.no_grad():
        threshold = 0.0 if outputs == 2 else float(score(net(points)).median())
    with torch.no_grad():
        y = (score(net(points)) > threshold).long()          # every point correctly classified
    exact = exact_margins_2d(net, points, y, threshold)
    brute, h = brute_force(net, points, threshold)
    reachable = brute < 4.0 - 1.6                               # the nearest boundary point lies inside the grid
    assert reachable.sum() >= 20
    # grid crossings are interpolated along edges, so they lie within one grid step of the boundary
    assert torch.all((exact[reachable] - brute[reachable]).abs() <= 1.5 * h)


def test_exact_margin_is_zero_for_misclassified_points_and_none_for_deeper_nets():
    net = small_net(5, 10)
    points = torch.randn(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = 1 - (score(net(points)) > 0.0).long()               # every point on the wrong side
    assert torch.all(exact_margins_2d(net, points, y, 0.0) == 0)
    deep = EntryNet([Block(nn.Linear(2, 4), nn.ReLU()), Block(nn.Linear(4, 4), nn.ReLU()), Block(nn.Linear(4, 1))],
                    ["a", "b", "c"], (2,))
    assert exact_margins_2d(deep, points.float(), y, 0.0) is None


def test_exact_boundary_points_lie_on_the_boundary():
    """The nearest boundary point is within the exact distance, and the score vanishes there (to rounding)."""
    net = small_net(7, 20)
    points = torch.rand(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        y = (score(net(points)) > 0.0).long()
    exact = exact_margins_2d(net, points, y, 0.0)
    # walking the straight line towards a point at exactly that distance never crosses earlier: sample 720 directions
    angles = torch.linspace(0, 2 * math.pi, 721, dtype=torch.float64)[:-1]
    circle = torch.stack([angles.cos(), angles.sin()], 1)
    for point, radius, target in zip(points[:10], exact[:10], y[:10]):
        ring = point + 0.999 * radius * circle
        with torch.no_grad():
            inside = (score(net(ring)) > 0.0).long()
        assert torch.all(inside == target)  # nothing closer is on the other side
        with torch.no_grad():
            beyond = (score(net(point + 1.001 * radius * circle)) > 0.0).long()
        assert torch.any(beyond != target)  # and the boundary is reached at that distance
