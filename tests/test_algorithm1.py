"""Algorithm 1 batched equals the one-sample-at-a-time loop (the oracle, pexp.train.reference), for all / first
layer."""
import copy

import pytest
import torch
from omegaconf import OmegaConf

from pexp.losses import SquaredError
from pexp.models import build_model, score
from pexp.train.loop import training_step
from pexp.train.optim import SummedMomentum
from pexp.train.perturb import active_layers, eps_at_epoch, extreme_perturbations
from pexp.train.reference import one_at_a_time_perturbation, one_at_a_time_update

EPS, PIECES, LR, MOMENTUM = 0.05, 4, 1e-2, 0.9


def small_pe_net():
    torch.manual_seed(0)
    cfg = OmegaConf.create(dict(name="pe_net", size=1, outputs=1, negative_slope=0.01))
    return build_model(cfg, (3, 32, 32)).double()


def oracle_perturbation(model, x, sign, active):
    return one_at_a_time_perturbation(model, x, sign, EPS, PIECES, active)


def oracle_update(model, buffers, x, y, active):
    one_at_a_time_update(model, buffers, x, y, EPS, PIECES, active, LR, MOMENTUM)


@pytest.mark.parametrize("layers", ["all", "first"])
def test_batched_perturbations_equal_one_at_a_time(layers):
    model = small_pe_net()
    active = active_layers(model, layers)
    x = torch.rand(5, 3, 32, 32, dtype=torch.float64) * 2 - 1
    batched = extreme_perturbations(model, x, EPS, PIECES, active)
    for i in range(len(x)):
        up = oracle_perturbation(model, x[i:i + 1], +1, active)
        down = oracle_perturbation(model, x[i:i + 1], -1, active)
        for index, on in enumerate(active):
            if not on:
                assert batched[index] is None
                continue
            torch.testing.assert_close(batched[index][i:i + 1], up[index], atol=1e-5, rtol=0)
            torch.testing.assert_close(batched[index][len(x) + i:len(x) + i + 1], down[index], atol=1e-5, rtol=0)
            assert batched[index].abs().max() <= EPS + 1e-12


@pytest.mark.parametrize("layers", ["all", "first"])
@pytest.mark.slow
def test_batched_updates_equal_one_at_a_time(layers):
    model = small_pe_net()
    reference = copy.deepcopy(model)
    active = active_layers(model, layers)
    optimizer = SummedMomentum(model.parameters(), lr=LR, momentum=MOMENTUM)
    buffers = [torch.zeros_like(p) for p in reference.parameters()]
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.rand(4, 3, 32, 32, dtype=torch.float64, generator=generator) * 2 - 1
        y = torch.randint(0, 2, (4,), generator=generator)
        training_step(model, optimizer, "sum", x, y, SquaredError(), EPS, PIECES, active)
        oracle_update(reference, buffers, x, y, active)
    moved = 0.0
    for mine, theirs, start in zip(model.parameters(), reference.parameters(), small_pe_net().parameters()):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
        moved = max(moved, float((mine - start).detach().abs().max()))
    assert moved > 1e-4  # the updates did something


def test_first_layer_only_leaves_other_entry_points_unperturbed():
    model = small_pe_net()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    perturbations = extreme_perturbations(model, x, EPS, PIECES, active_layers(model, "first"))
    assert perturbations[0] is not None and all(p is None for p in perturbations[1:])
    assert perturbations[0].shape == (4, 3, 32, 32)


def test_argmax_and_argmin_move_the_output_apart():
    model = small_pe_net()
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    perturbations = extreme_perturbations(model, x, EPS, PIECES, active_layers(model, "all"))
    with torch.no_grad():
        out = score(model(torch.cat([x, x]), perturbations))
        clean = score(model(x))
    assert torch.all(out[:3] > clean) and torch.all(out[3:] < clean)


def test_eps_ramp_matches_the_authors_stages():
    values = [eps_at_epoch(0.03, epoch, 40, 4) for epoch in range(40)]
    assert values[0] == values[9] == 0.0
    assert values[10] == pytest.approx(0.01) and values[19] == pytest.approx(0.01)
    assert values[20] == pytest.approx(0.02) and values[30] == values[39] == pytest.approx(0.03)
    assert eps_at_epoch(0.02, 0, 5, 1) == 0.02


def test_summed_momentum_first_step_uses_the_damping_factor():
    param = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = SummedMomentum([param], lr=0.1, momentum=0.9, weight_decay=0.5)
    param.grad = torch.tensor([2.0])
    optimizer.step()  # buffer = 0.1 * (2 + 0.5 * 1) = 0.25; param = 1 - 0.025
    assert float(param.detach()) == pytest.approx(0.975)
