"""Tangent sensitivity (paper TS): closed form vs autograd, active counts, and the bound of eq. (2)."""
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from pexp.eval.reference import autograd_tangent_sensitivity
from pexp.eval.tangent import (active_counts, linear_layers, psi_star, sensitivity_bound,
                               tangent_sensitivity)
from pexp.models import build_model


def small_mlp(input_shape=(7,), widths=(5, 4, 3), outputs=3, seed=0):
    torch.manual_seed(seed)
    cfg = OmegaConf.create(dict(name="mlp", widths=list(widths), outputs=outputs))
    return build_model(cfg, input_shape).double()


def random_inputs(model, n=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, *model.input_shape, generator=generator, dtype=torch.float64) * 2


def autograd_sensitivity(model, x):
    return autograd_tangent_sensitivity(model, x)


@pytest.mark.parametrize("input_shape", [(7,), (1, 3, 4)])
def test_closed_form_equals_autograd(input_shape):
    model = small_mlp(input_shape)
    x = random_inputs(model)
    expected, bias_max = autograd_sensitivity(model, x)
    per_layer = tangent_sensitivity(model, x, batch_size=4, per_layer=True)
    total = tangent_sensitivity(model, x)
    assert bias_max == 0.0
    assert per_layer.shape == (len(x), 4, 3) and total.shape == (len(x), 3)
    assert (expected > 0).double().mean() > 0.5  # mostly active paths: the comparison is not 0 == 0
    torch.testing.assert_close(per_layer, expected, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(total, expected.sum(1), rtol=1e-5, atol=1e-12)


def test_first_layer_and_output_layer_terms():
    """Layer 1: ||delta_1^j||^2 d_in; output layer: ||d h_{L-1}/dx||_F^2, the same for every output."""
    model = small_mlp()
    x = random_inputs(model)
    per_layer = tangent_sensitivity(model, x, per_layer=True)
    last = per_layer[:, -1]
    torch.testing.assert_close(last, last[:, :1].expand_as(last))
    hidden = torch.nn.Sequential(*model.blocks[:-1])
    jacobian = torch.func.vmap(torch.func.jacrev(lambda v: hidden(v.unsqueeze(0))[0]))(x)
    torch.testing.assert_close(last[:, 0], jacobian.square().sum((1, 2)))
    first = model.blocks[0]
    beyond_first = torch.nn.Sequential(torch.nn.ReLU(), *model.blocks[1:])
    preactivation = first.affine(first.before(x)).detach()
    delta = torch.func.vmap(torch.func.jacrev(lambda z: beyond_first(z.unsqueeze(0))[0]))(preactivation)
    torch.testing.assert_close(per_layer[:, 0], delta.square().sum(2) * 7)


def test_active_counts_equal_a_direct_count():
    model = small_mlp((1, 3, 4), widths=(6, 5, 4))
    x = random_inputs(model, n=40)
    h, expected = x.flatten(1), []
    for layer in linear_layers(model)[:-1]:
        z = h @ layer.weight.T + layer.bias
        expected.append((z > 0).sum(1))
        h = z.clamp(min=0)
    counts = active_counts(model, x, batch_size=7)
    assert counts.dtype == torch.long and counts.shape == (40, 3)
    assert torch.equal(counts, torch.stack(expected, 1))
    assert 0 < counts.float().mean() < 5  # neither all dead nor all active: a count bug would show
    with torch.no_grad():
        for layer in linear_layers(model):
            layer.bias.zero_()
    assert active_counts(model, torch.zeros(1, 1, 3, 4, dtype=torch.float64)).sum() == 0  # z = 0 is not active


def test_linear_layers_of_the_cifar_mlp():
    model = build_model(OmegaConf.create(dict(name="mlp", widths=[100] * 4, outputs=10)), (3, 32, 32))
    layers = linear_layers(model)
    assert [(layer.in_features, layer.out_features) for layer in layers] == [
        (3072, 100), (100, 100), (100, 100), (100, 100), (100, 10)]
    x = torch.rand(3, 3, 32, 32)
    assert tangent_sensitivity(model, x).shape == (3, 10)
    assert active_counts(model, x).shape == (3, 4)


def kummer_series(a, b, z, terms=80):
    """1F1(a; b; z) = sum_n (a)_n / (b)_n z^n / n!, summed directly."""
    total, term = 0.0, 1.0
    for n in range(terms):
        total += term
        term *= (a + n) / (b + n) * z / (n + 1)
    return total


def direct_bound(k, n_theta, d_in, mu, sigma, w_product):
    kummer = kummer_series(-(k - 1) / 2, 0.5, -mu ** 2 / (2 * sigma ** 2))
    return (n_theta * d_in * sigma ** (2 * (k - 1)) * 2 ** (k - 1) / k ** (2 * k) * math.gamma(k / 2) ** 2
            / math.pi * kummer ** 2 * w_product ** 2)


def test_bound_at_hand_computed_points():
    # k = 1: Psi(0, 1/2, z) = 1 and Gamma(1/2)^2 / pi = 1, whatever mu and sigma
    assert sensitivity_bound(1, 1000, 10, 3.0, 2.0, 0.5) == pytest.approx(1000 * 10 * 0.25, rel=1e-12)
    # k = 2, mu = 0: 2 / 2^4 * Gamma(1)^2 / pi = 1 / (8 pi)
    assert sensitivity_bound(2, 100, 3, 0.0, 2.0, 0.5) == pytest.approx(100 * 3 * 4 * 0.5 ** 4 / (8 * math.pi),
                                                                        rel=1e-12)
    # k = 3: Gamma(3/2)^2 / pi = 1/4, Psi(-1, 1/2, z) = 1 - 2z = 2 at mu = sigma = 1
    assert sensitivity_bound(3, 50, 7, 1.0, 1.0, 0.3) == pytest.approx(
        50 * 7 * 4 / 3 ** 6 / 4 * 2 ** 2 * 0.3 ** 6, rel=1e-12)
    assert psi_star(1, 5.0, 3.0) == pytest.approx(1.0, rel=1e-12)
    assert psi_star(3, 1.0, 1.0) == pytest.approx(4.0, rel=1e-12)


@pytest.mark.parametrize("k,mu,sigma", [(2, 1.3, 0.9), (4, 2.0, 1.5), (6, 0.7, 2.5)])
def test_bound_matches_a_series_evaluation(k, mu, sigma):
    assert sensitivity_bound(k, 1234, 56, mu, sigma, 0.8) == pytest.approx(
        direct_bound(k, 1234, 56, mu, sigma, 0.8 ** k), rel=1e-10)
    assert psi_star(k, mu, sigma) == pytest.approx(
        sigma ** (2 * (k - 1)) * kummer_series(-(k - 1) / 2, 0.5, -mu ** 2 / (2 * sigma ** 2)) ** 2, rel=1e-10)


def test_bound_vectorised_over_k_and_per_layer_w_max():
    depths = np.arange(1, 6)
    w_max = [0.5, 2.0, 0.1, 3.0, 1.5]
    vectorised = sensitivity_bound(depths, 1e4, 3072, 0.7, 1.2, w_max)
    assert isinstance(vectorised, np.ndarray) and vectorised.shape == (5,)
    expected = [direct_bound(k, 1e4, 3072, 0.7, 1.2, math.prod(w_max[:k])) for k in depths]
    np.testing.assert_allclose(vectorised, expected, rtol=1e-10)
    np.testing.assert_allclose(sensitivity_bound(depths, 1e4, 3072, 0.7, 1.2, 0.4),
                               [direct_bound(k, 1e4, 3072, 0.7, 1.2, 0.4 ** k) for k in depths], rtol=1e-10)
    assert isinstance(sensitivity_bound(2, 1e4, 3072, 0.7, 1.2, 0.4), float)


def test_bound_stays_finite_for_deep_networks():
    """k^(2k) and Gamma(k/2)^2 overflow floats at k = 200; the log-space evaluation does not."""
    bound = sensitivity_bound(200, 1e6, 3072, 480.0, 40.0, 0.1)
    assert np.isfinite(bound) and bound > 0


@pytest.mark.parametrize("call,message", [
    (lambda: sensitivity_bound(0, 10, 10, 0.0, 1.0, 0.1), "k=0 is not allowed"),
    (lambda: sensitivity_bound(np.array([1, 2.5]), 10, 10, 0.0, 1.0, 0.1), "k=2.5 is not allowed"),
    (lambda: sensitivity_bound(2, 10, 10, 0.0, 0.0, 0.1), "sigma=0 is not allowed"),
    (lambda: sensitivity_bound(2, 10, 10, 0.0, np.array([1.0, -2.0]), 0.1), "sigma=-2 is not allowed"),
    (lambda: sensitivity_bound(2, 10, 10, 0.0, 1.0, -0.1), "w_max=-0.1 is not allowed"),
    (lambda: sensitivity_bound(3, 10, 10, 0.0, 1.0, [0.1, 0.2]), "w_max with 2 layers is not allowed for k=3"),
    (lambda: sensitivity_bound(2, 0, 10, 0.0, 1.0, 0.1), "n_theta=0 is not allowed"),
    (lambda: psi_star(0, 0.0, 1.0), "k=0 is not allowed"),
    (lambda: psi_star(2, 0.0, -1.0), "sigma=-1 is not allowed"),
    (lambda: tangent_sensitivity(small_mlp(), torch.zeros(2, 8, dtype=torch.float64)),
     r"inputs of shape \(8,\) are not allowed"),
    (lambda: tangent_sensitivity(small_mlp(), torch.zeros(2, 7), batch_size=0), "batch_size=0 is not allowed"),
    (lambda: active_counts(torch.nn.Linear(3, 2), torch.zeros(2, 3)), "Linear is not allowed"),
    (lambda: linear_layers(build_model(OmegaConf.create(dict(name="pe_net", size=1, negative_slope=0.0,
                                                             outputs=2)), (3, 32, 32))),
     "block 0 .* is not allowed"),
])
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
