"""Toy data sets of papers PE and OM, and the exact geometry evaluators."""
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from pexp.data.toys import diagonal7, grid25, pe_fig1_points, pe_fig2_points, sphere
from pexp.eval.geometry import (RANK_EPS, components_for, cumulative_explained_variance, linear_margin,
                                linear_margin_linf, numerical_rank, offmanifold_distance, principal_variances,
                                svm_hard_margin)


def cfg(**values):
    return OmegaConf.create(values)


# --- toy data ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 21, 41, 61, 81, 101])
def test_pe_fig1_points_are_the_three_seeded_clusters(seed):
    data = pe_fig1_points(cfg(seed=seed))
    x, y = data.train.x, data.train.y
    assert x.shape == (16, 2) and x.dtype == torch.float32 and data.source == "toy"
    assert y.tolist() == [0] * 8 + [1] * 8
    centres = torch.tensor([[7.0, 19.0]] * 8 + [[0.0, 5.0]] * 4 + [[11.0, 27.0]] * 4)
    assert (x - centres).norm(dim=1).max() < 2.5               # 5 std of a 0.5-std Gaussian
    for rows in (slice(0, 8), slice(8, 12), slice(12, 16)):    # cluster means within 4 std of the mean
        assert (x[rows].mean(0) - centres[rows][0]).abs().max() < 4 * 0.5 / math.sqrt(rows.stop - rows.start)
    assert 0.2 < (x - centres).std() < 0.9
    assert torch.equal(x, pe_fig1_points(cfg(seed=seed)).train.x)
    assert not torch.equal(x, pe_fig1_points(cfg(seed=seed + 1)).train.x)


def test_pe_fig2_variant1_is_the_two_ellipses():
    data = pe_fig2_points(cfg(variant=1))
    x, y = data.train.x.double(), data.train.y
    assert x.shape == (40, 2) and y.tolist() == [0] * 20 + [1] * 20
    t = 2 * math.pi * torch.arange(20, dtype=torch.float64) / 20
    assert torch.allclose(x[:20, 0], 35 + 35 * torch.cos(t), atol=1e-5)
    assert torch.allclose(x[:20, 1], 35 + 35 * torch.sin(t - math.pi / 2.3), atol=1e-5)
    assert torch.allclose(x[20:, 0], -35 + 58 * torch.cos(t), atol=1e-5)
    assert torch.allclose(x[20:, 1], -35 + 58 * torch.sin(t - math.pi / 8), atol=1e-5)
    assert x.mean(0).abs().max() < 1e-4
    assert x[3].tolist() == pytest.approx([35 + 35 * math.cos(0.3 * math.pi),
                                           35 + 35 * math.sin(0.3 * math.pi - math.pi / 2.3)], abs=1e-5)


def test_pe_fig2_variant2_is_on_the_line_in_the_stated_intervals():
    x, y = (lambda s: (s.x.double(), s.y))(pe_fig2_points(cfg(variant=2)).train)
    assert x.shape == (40, 2) and y.tolist() == [0] * 20 + [1] * 20
    assert torch.allclose(x[:, 1], 10 + 20 * x[:, 0], atol=1e-4)
    assert x[:20, 0].min() > 3.2 and x[:20, 0].max() == pytest.approx(4.0)
    assert x[20:, 0].min() > 1.2 and x[20:, 0].max() == pytest.approx(2.0)
    assert torch.allclose(x[:20, 0].diff(), torch.full((19,), 0.04, dtype=torch.float64), atol=1e-6)
    assert x[20, 0].item() == pytest.approx(1.24)


def test_pe_fig2_rejects_an_unknown_variant():
    with pytest.raises(ValueError, match="data.variant=3"):
        pe_fig2_points(cfg(variant=3))


def test_diagonal7_points_labels_and_subspace():
    data = diagonal7(cfg())
    expected = torch.tensor([-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1])
    assert torch.allclose(data.train.x, torch.stack([expected, expected], 1), atol=1e-7)
    assert data.train.y.tolist() == [0, 1, 0, 1, 0, 1, 0]
    assert torch.allclose(data.subspace, torch.tensor([[1.0, 1.0]]) / math.sqrt(2))
    assert data.test is data.train


@pytest.mark.parametrize("plane, z", [("z05", 0.5), ("xy", 0.0)])
def test_grid25_is_a_checkerboard_on_its_plane(plane, z):
    data = grid25(cfg(plane=plane))
    x, y = data.train.x, data.train.y
    assert x.shape == (25, 3) and int(y.sum()) == 12
    assert sorted({round(v, 6) for v in x[:, 0].tolist()}) == [0, 0.25, 0.5, 0.75, 1]
    assert torch.all(x[:, 2] == z)
    assert torch.equal(y, ((x[:, 0] * 4).round() + (x[:, 1] * 4).round()).long() % 2)
    assert x[7].tolist() == [0.25, 0.5, z] and y[7] == 1
    assert torch.equal(data.subspace, torch.eye(3)[:2])
    assert torch.equal(data.train.extras["offset"], torch.tensor([[0, 0, z]]).float().expand(25, 3))
    assert torch.allclose(x - data.train.extras["offset"], (x @ data.subspace.T) @ data.subspace)


def test_grid25_rejects_an_unknown_plane():
    with pytest.raises(ValueError, match="data.plane='yz'"):
        grid25(cfg(plane="yz"))


def test_sphere_points_are_unit_vectors_in_their_subspace():
    data = sphere(cfg(n_train=300, n_test=100, dim=28, ambient=784, seed=3))
    basis = data.subspace
    assert basis.shape == (28, 784)
    assert torch.allclose(basis @ basis.T, torch.eye(28), atol=1e-5)
    for split, n in ((data.train, 300), (data.test, 100)):
        assert split.x.shape == (n, 784)
        assert (split.x.norm(dim=1) - 1).abs().max() < 1e-5
        assert (split.x - (split.x @ basis.T) @ basis).norm(dim=1).max() < 1e-5
        assert torch.equal(split.y, ((split.x @ basis[0]) > 0).long())
        assert 0.3 < split.y.float().mean() < 0.7
    assert not torch.allclose(data.train.x[:100], data.test.x)
    again = sphere(cfg(n_train=300, n_test=100, dim=28, ambient=784, seed=3))
    assert torch.equal(again.train.x, data.train.x) and torch.equal(again.subspace, basis)
    assert not torch.equal(sphere(cfg(n_train=300, n_test=100, dim=28, ambient=784, seed=4)).subspace, basis)


def test_missing_key_is_a_clear_error():
    with pytest.raises(ValueError, match="data.seed is required"):
        pe_fig1_points(cfg())


# --- linear and SVM margins ---------------------------------------------------------------------------------------

def test_linear_margins_by_hand():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 3.0]])
    w, b = torch.tensor([3.0, 4.0]), -5.0    # ||w||_2 = 5, ||w||_1 = 7
    assert linear_margin(w, b, x, torch.tensor([0, 1, 0])).tolist() == pytest.approx([1.0, 0.2, -3.8])
    assert linear_margin(w, b, x, torch.tensor([-1, 1, 1])).tolist() == pytest.approx([1.0, 0.2, 3.8])
    assert linear_margin_linf(w, b, x).tolist() == pytest.approx([5 / 7, 1 / 7, 19 / 7])
    with pytest.raises(ValueError, match="targets"):
        linear_margin(w, b, x, torch.tensor([0, 2, 1]))


def test_svm_margin_of_two_points():
    margin, w, b = svm_hard_margin(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1]))
    assert margin == pytest.approx(1.0, abs=1e-6)
    assert w.tolist() == pytest.approx([1.0, 0.0], abs=1e-6) and b == pytest.approx(-1.0, abs=1e-6)


def test_svm_margin_is_the_best_direction_in_2d():
    generator = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(15, 2, generator=generator) + torch.tensor([3.0, 1.0]),
                   torch.randn(15, 2, generator=generator) - torch.tensor([3.0, 1.0])]).double()
    y = torch.tensor([1] * 15 + [0] * 15)
    margin, w, b = svm_hard_margin(x, y)
    angles = torch.linspace(0, 2 * math.pi, 200001, dtype=torch.float64)
    projections = x @ torch.stack([angles.cos(), angles.sin()])       # (30, angles)
    best = ((projections[:15].min(0).values - projections[15:].max(0).values) / 2).max()
    assert float(best) - 1e-9 < margin < float(best) + 5e-5          # no direction beats it; grid step 3e-5 rad
    distances = linear_margin(w, b, x, y)
    assert distances.min().item() == pytest.approx(margin, abs=1e-6)
    assert (distances - margin).abs().lt(1e-6).sum() >= 2                # at least two support vectors


def test_svm_margin_of_pe_fig2_variant2_is_half_the_gap_along_the_line():
    data = pe_fig2_points(cfg(variant=2)).train
    margin, _, _ = svm_hard_margin(data.x, data.y)
    assert margin == pytest.approx(0.62 * math.sqrt(401), rel=1e-5)     # nearest points x = 2 and x = 3.24


def test_svm_rejects_inseparable_data():
    with pytest.raises(ValueError, match="not linearly separable"):
        svm_hard_margin(torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([0, 1, 0]))


# --- distance to a network's boundary along the normal -------------------------------------------------------------

def plane_model(weight, bias, outputs=1):
    """A Linear model whose score is weight.x + bias (one output, or as logit1 - logit0 of two)."""
    model = nn.Linear(len(weight), outputs)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[-1] = torch.tensor(weight)
        model.bias[-1] = bias
    return model


@pytest.mark.parametrize("outputs", [1, 2])
def test_offmanifold_distance_to_a_known_plane(outputs):
    model = plane_model([0.0, 0.0, 1.0], -0.8, outputs)                 # boundary z = 0.8
    x = grid25(cfg(plane="z05")).train.x
    distance = offmanifold_distance(model, x, torch.tensor([0.0, 0.0, 1.0]), max_distance=2.0, tolerance=1e-4)
    assert distance.shape == (25,)
    assert torch.all(distance >= 0.3 - 1e-6) and torch.all(distance <= 0.3 + 1e-4)
    near = offmanifold_distance(model, x, torch.tensor([0.0, 0.0, 1.0]), max_distance=0.2, tolerance=1e-4)
    assert torch.all(torch.isinf(near))


def test_offmanifold_distance_takes_the_nearer_side_and_the_threshold():
    model = plane_model([1.0, -1.0], 0.5)                                # boundary x - y = -0.5
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    normal = torch.tensor([1.0, -1.0]) / math.sqrt(2)
    distance = offmanifold_distance(model, x, normal, max_distance=3.0, tolerance=1e-5)
    # score along -+normal from x changes by -+sqrt 2 per unit; crossings at |score| / sqrt 2
    expected = torch.tensor([0.5, 1.5, 0.5]) / math.sqrt(2)
    assert torch.allclose(distance, expected.double(), atol=1e-5)
    shifted = offmanifold_distance(model, x, normal, max_distance=3.0, tolerance=1e-5, threshold=1.0)
    assert torch.allclose(shifted, torch.tensor([0.5, 0.5, 1.5]).double() / math.sqrt(2), atol=1e-5)


def test_offmanifold_distance_over_a_basis_takes_the_nearest_axis():
    model = plane_model([0.0, 1.0, 2.0], -1.0)                           # boundary y + 2 z = 1
    x = torch.zeros(4, 3)
    distance = offmanifold_distance(model, x, torch.eye(3)[1:], max_distance=5.0, tolerance=1e-5)
    assert torch.allclose(distance, torch.full((4,), 0.5, dtype=torch.float64), atol=1e-5)
    with pytest.raises(ValueError, match="unit vector"):
        offmanifold_distance(model, x, torch.tensor([0.0, 0.0, 2.0]), max_distance=1.0, tolerance=1e-3)


def test_offmanifold_distance_finds_the_first_crossing_of_a_relu_network():
    # score = relu(z - 0.2) + relu(-z - 0.2) - 0.1 at z = 0: negative, crossings at z = +-0.3
    model = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[0].bias.fill_(-0.2)
        model[2].weight.fill_(1.0)
        model[2].bias.fill_(-0.1)
    x = torch.tensor([[0.0], [0.25], [1.0]])                            # score at 1.0: 0.7, crossing at z = 0.3
    distance = offmanifold_distance(model, x, torch.tensor([1.0]), max_distance=4.0, tolerance=1e-6,
                                    scan_points=40, batch_size=7)
    assert torch.allclose(distance, torch.tensor([0.3, 0.05, 0.7], dtype=torch.float64), atol=1e-6)


# --- PCA spectrum ---------------------------------------------------------------------------------------------------

def test_cumulative_variance_matches_svdvals():
    x = torch.randn(40, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    squares = torch.linalg.svdvals(x - x.mean(0)) ** 2
    expected = squares.cumsum(0) / squares.sum()
    for batch_size in (7, 100):
        fractions = cumulative_explained_variance(x.float(), batch_size=batch_size)
        assert fractions.shape == (12,) and fractions[-1] == 1.0
        assert torch.allclose(fractions, expected, atol=1e-6)
    wide = torch.randn(6, 30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    squares = torch.linalg.svdvals(wide - wide.mean(0)) ** 2
    assert torch.allclose(cumulative_explained_variance(wide, batch_size=4), squares.cumsum(0) / squares.sum(),
                          atol=1e-12)


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_cumulative_variance_reaches_one_at_the_rank(rank):
    generator = torch.Generator().manual_seed(rank)
    x = (torch.randn(500, rank, generator=generator, dtype=torch.float64)
         @ torch.randn(rank, 50, generator=generator, dtype=torch.float64) + 3.0)   # rank after centring
    fractions = cumulative_explained_variance(x.reshape(500, 2, 25), batch_size=64)
    assert torch.all(fractions.diff() >= 0)
    assert fractions[rank - 1] > 1 - 1e-10
    if rank > 1:
        assert fractions[rank - 2] < 1 - 1e-4
    assert components_for(fractions, levels=(1 - 1e-9,)) == {1 - 1e-9: rank}


@pytest.mark.parametrize("rank", [1, 4, 9])
def test_numerical_rank_of_a_float32_matrix_of_known_rank(rank):
    """Activations are float32: a rank-r matrix plus an offset (rank r after centring) rounds to float32, and its
    rounding noise stays below the tolerance, as in numpy's matrix_rank of the centred float32 matrix."""
    generator = torch.Generator().manual_seed(rank)
    x = (torch.randn(300, rank, generator=generator, dtype=torch.float64)
         @ torch.randn(rank, 40, generator=generator, dtype=torch.float64) + 5.0).float()
    assert numerical_rank(principal_variances(x, batch_size=64), tuple(x.shape)) == rank
    centred = (x.double() - x.double().mean(0)).float().numpy()
    assert np.linalg.matrix_rank(centred) == rank


def test_numerical_rank_is_full_for_generic_data_and_counts_singular_values_above_the_tolerance():
    generator = torch.Generator().manual_seed(3)
    tall = torch.randn(200, 30, generator=generator)
    wide = torch.randn(20, 50, generator=generator)        # centring 20 rows leaves rank 19
    assert numerical_rank(principal_variances(tall), (200, 30)) == 30
    assert numerical_rank(principal_variances(wide, batch_size=7), (20, 50)) == 19
    # centred 100 x 10 matrix with singular values 1, 0.1, 1e-4 (above 100 * eps32 = 1.2e-5), 1e-6 (below) and 0
    basis = torch.randn(100, 10, generator=generator, dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.cat([torch.ones(100, 1, dtype=torch.float64), basis], dim=1))
    v, _ = torch.linalg.qr(torch.randn(10, 10, generator=generator, dtype=torch.float64))
    singular = torch.tensor([1.0, 0.1, 1e-4, 1e-6] + [0.0] * 6, dtype=torch.float64)
    x = (u[:, 1:] * singular) @ v.T + 2.0
    squares = principal_variances(x)
    assert torch.allclose(squares[:4].sqrt(), singular[:4], rtol=1e-6, atol=1e-8)
    assert 1e-6 < 100 * RANK_EPS < 1e-4
    assert numerical_rank(squares, (100, 10)) == 3
    assert numerical_rank(squares, (100, 10), eps=3e-9) == 4   # a finer tolerance (3e-7) counts 1e-6 too
    assert numerical_rank(torch.zeros(5, dtype=torch.float64), (8, 5)) == 0


def test_components_for_counts_the_first_component_reaching_each_level():
    fractions = torch.tensor([0.5, 0.8, 0.9, 0.94, 0.95, 1.0], dtype=torch.float64)
    assert components_for(fractions) == {0.9: 3, 0.95: 5}
    assert components_for(fractions, levels=(0.1, 0.81, 1.0)) == {0.1: 1, 0.81: 3, 1.0: 6}
    with pytest.raises(ValueError, match="levels"):
        components_for(fractions, levels=(95,))
