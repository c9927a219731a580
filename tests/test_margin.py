"""The margin search agrees with exact margins of a linear model."""
import math

import pytest
import torch
from torch import nn

from pexp.eval.margin import minimal_perturbation


def linear_problem(seed=0, n=64, d=30):
    generator = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, d, generator=generator, dtype=torch.float64))
        model.bias.copy_(torch.randn(2, generator=generator, dtype=torch.float64) * 0.1)
    x = (torch.rand(n, d, generator=generator, dtype=torch.float64) - 0.5)  # inside [-0.5, 0.5]: bounds never bind
    y = torch.randint(0, 2, (n,), generator=generator)
    return model, x, y


def exact_margin(model, x, y, p):
    w = (model.weight[1] - model.weight[0]).detach()
    b = float(model.bias[1] - model.bias[0])
    value = x @ w + b
    dual = w.abs().sum() if p == "linf" else w.norm()  # the dual norm of the attack norm
    margin = value.abs() / dual
    wrong = (value > 0).long() != y
    return torch.where(wrong, torch.zeros_like(margin), margin)


@pytest.mark.parametrize("norm,resolution", [("linf", 0.001), ("l2", 0.005)])
def test_margin_equals_exact_value_for_a_linear_model(norm, resolution):
    model, x, y = linear_problem()
    exact = exact_margin(model, x, y, norm)
    eps_max = math.ceil(float(exact[exact > 0].quantile(0.6)) / resolution) * resolution  # about 40% beyond reach
    torch.manual_seed(0)
    # from the clean point, 40 steps of eps/30 reach the optimal corner / boundary of the ball exactly
    found = minimal_perturbation(model, x, y, norm=norm, eps_max=eps_max, resolution=resolution, steps=40,
                                 random_start=False).double()
    inside = exact <= eps_max - resolution
    assert inside.sum() >= 10 and (~inside).sum() >= 5  # the test covers both cases
    assert torch.all(found[inside] >= exact[inside] - 1e-6)
    assert torch.all(found[inside] <= exact[inside] + resolution + 1e-6)
    assert torch.all(found[exact > eps_max + 1e-9] == math.inf)
    assert torch.all(found[exact == 0] == 0)


def test_authors_attack_setting_never_reports_less_than_the_exact_margin():
    """With a random start, 40 steps of eps/30 cannot always reach the corner (each coordinate moves at most
    1.33 eps): margins are upper bounds, off by up to ~25% for a linear model, never below the exact value."""
    model, x, y = linear_problem(seed=2)
    exact = exact_margin(model, x, y, "linf")
    torch.manual_seed(0)
    found = minimal_perturbation(model, x, y, eps_max=0.2, resolution=0.001).double()
    reached = torch.isfinite(found)
    assert reached.sum() > 20
    assert torch.all(found[reached] >= exact[reached] - 1e-6)
    assert torch.all(found[reached] <= 1.3 * exact[reached] + 0.001 + 1e-6)


def test_search_needs_about_log2_attacks_per_point():
    model, x, y = linear_problem(seed=1)
    calls = []
    original = model.forward
    model.forward = lambda inputs: (calls.append(len(inputs)), original(inputs))[1]
    minimal_perturbation(model, x, y, eps_max=0.1, resolution=0.001, steps=5)
    points_passes = sum(calls)
    # per point: 1 clean pass + at most 1 + ceil(log2 100) = 8 attacks of (5 steps + 1 check) passes
    assert points_passes <= len(y) * (1 + 8 * 6)


def test_bad_norm_is_a_clear_error():
    model, x, y = linear_problem()
    with pytest.raises(ValueError, match="norm='l3' is not allowed"):
        minimal_perturbation(model, x, y, norm="l3")


@pytest.mark.parametrize("part", ["subspace", "complement"])
def test_restricted_margin_equals_exact_value_for_a_linear_model(part):
    """With perturbations restricted to a subspace S (projector P), the l2 margin of w.x + b is |w.x + b| / ||P w||."""
    model, x, y = linear_problem(n=48, d=12)
    basis = torch.linalg.qr(torch.randn(12, 4, generator=torch.Generator().manual_seed(3),
                                        dtype=torch.float64))[0].T  # (4, 12) orthonormal rows
    projector = basis.T @ basis
    if part == "complement":
        projector = torch.eye(12, dtype=torch.float64) - projector
        basis = torch.linalg.svd(projector)[2][:8]  # (8, 12) rows spanning the complement
    w = (model.weight[1] - model.weight[0]).detach()
    value = x @ w + float(model.bias[1] - model.bias[0])
    exact = torch.where((value > 0).long() != y, torch.zeros_like(value), value.abs() / (projector @ w).norm())
    resolution = 0.005
    eps_max = math.ceil(float(exact[exact > 0].quantile(0.6)) / resolution) * resolution
    found = minimal_perturbation(model, x, y, norm="l2", bounds=(-1e6, 1e6), eps_max=eps_max,
                                 resolution=resolution, random_start=False, directions=basis).double()
    inside = exact <= eps_max - resolution
    assert inside.sum() >= 10
    assert torch.all(found[inside] >= exact[inside] - 1e-6)
    assert torch.all(found[inside] <= exact[inside] + resolution + 1e-6)


def test_restricted_attack_never_leaves_its_subspace():
    import foolbox as fb

    from pexp.eval.margin import _L2PGD

    model, x, y = linear_problem(n=32, d=12)
    basis = torch.linalg.qr(torch.randn(12, 3, dtype=torch.float64,
                                        generator=torch.Generator().manual_seed(1)))[0].T
    attack = _L2PGD(rel_stepsize=1 / 30, steps=40, random_start=True)
    attack.projector = basis.T @ basis
    fmodel = fb.PyTorchModel(model.eval(), bounds=(-1e6, 1e6))
    adversarial = attack.run(fmodel, x, fb.criteria.Misclassification(y), epsilon=2.0)
    delta = adversarial - x
    assert delta.norm(dim=1).max() > 0.5  # it moved
    off = delta - delta @ basis.T @ basis
    assert off.norm(dim=1).max() < 1e-9 and delta.norm(dim=1).max() <= 2.0 + 1e-9
