"""Margin-target training and the off-manifold evaluator on the diagonal toy."""
import json

import pandas as pd
import torch

from pexp.eval.evaluate import complement_basis, evaluate
from pexp.figures.compose import compose_experiment
from pexp.train.loop import load_trained, train, training_margin


def om(tmp_path, *extra):
    return compose_experiment("om_fig2_a", ["train.progress=false", "seed=1", f"paths.output_dir={tmp_path}",
                                            *extra])


def test_margin_target_training_stops_at_the_target(tmp_path):
    run = train(om(tmp_path, "train.target_margin=0.05", "train.log_every=100", "train.checkpoint_every=100"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["reached_target"] and metrics["final_margin"] >= 0.05
    assert metrics["epochs_trained"] < 50000
    model, cfg = load_trained(run)
    data_x = torch.tensor([[-1 + 2 * k / 6] * 2 for k in range(7)])
    data_y = torch.arange(7) % 2
    assert float(training_margin(model, data_x, data_y, 0.0)) >= 0.05
    log = pd.read_csv(run / "train_log.csv")
    assert log["epoch"].iloc[-1] == metrics["epochs_trained"]  # the stopping epoch is logged


def test_hitting_the_epoch_cap_is_reported(tmp_path, capsys):
    run = train(om(tmp_path, "train.epochs=20", "train.log_every=10", "train.checkpoint_every=10"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["reached_target"] is False and metrics["epochs_trained"] == 20
    assert "hit the epoch cap (20) before the target margin 0.3" in capsys.readouterr().out


def test_offmanifold_evaluator_measures_along_the_normal(tmp_path):
    cfg = om(tmp_path, "train.target_margin=0.05", "train.log_every=100", "train.checkpoint_every=100")
    table = evaluate(train(cfg), cfg.eval, progress=False)
    points = table[table["kind"] == "point"]
    assert len(points) == 7 and (points["distance"] > 0).all()
    model, _ = load_trained(train(cfg))
    normal = torch.tensor([1.0, -1.0]) / 2 ** 0.5
    x = torch.tensor(points[["x0", "x1"]].to_numpy(), dtype=torch.float32)
    y = torch.tensor(points["target"].to_numpy())
    sign = lambda p: (model(p)[:, 0] > 0).long()  # noqa: E731
    with torch.no_grad():
        for direction in (normal, -normal):  # just inside the reported distance nothing has flipped
            inside = x + (torch.tensor(points["distance"].to_numpy()) - 2e-3).clamp(min=0)[:, None].float() * direction
            assert torch.equal(sign(inside), y)
    assert {"boundary"} <= set(table["kind"])


def test_complement_basis_is_orthonormal_and_orthogonal():
    subspace = torch.tensor([[1.0, 1.0, 0.0]]) / 2 ** 0.5
    complement = complement_basis(subspace)
    assert complement.shape == (2, 3)
    torch.testing.assert_close(complement @ complement.T, torch.eye(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(complement @ subspace.T, torch.zeros(2, 1), atol=1e-6, rtol=0)


def test_init_schemes_and_output_signs():
    from omegaconf import OmegaConf

    from pexp.models import build_model

    model_cfg = OmegaConf.create(dict(name="mlp", widths=[2000, 2000], outputs=1))
    torch.manual_seed(0)
    authors = build_model(model_cfg, (400,), OmegaConf.create(dict(factor=1.0, layers="all",
                                                                   scheme="normal_fan_in")))
    for name, fan_in in (("fc1", 400), ("fc2", 2000), ("fc3", 2000)):
        weight = authors.affine(name).weight
        assert abs(float(weight.std()) * fan_in ** 0.5 - 1) < 0.03 and abs(float(weight.mean())) < 0.01
    grid = build_model(model_cfg, (400,), OmegaConf.create(dict(factor=2.0, layers=["first"], first_std=0.5,
                                                                output_signs=True)))
    assert abs(float(grid.affine("fc1").weight.std()) - 0.25) < 0.01  # N(0, 0.5^2), then divided by 2
    assert set(grid.affine("fc3").weight.unique().tolist()) == {-1.0, 1.0}
    default = build_model(model_cfg, (400,), OmegaConf.create(dict(factor=1.0, layers="all")))
    assert float(default.affine("fc1").weight.abs().max()) <= 400 ** -0.5  # PyTorch's U(-1/sqrt(fan_in), ...)


def test_first_layer_penalty_adds_its_gradient():
    from omegaconf import OmegaConf

    from pexp.models import build_model
    from pexp.losses import Loss
    from pexp.train.loop import training_step

    loss = Loss.from_config(OmegaConf.create(dict(name="logistic", outputs=1)))
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1])
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(dict(name="mlp", widths=[7], outputs=1)), (3,)).double()
    reference = build_model(OmegaConf.create(dict(name="mlp", widths=[7], outputs=1)), (3,)).double()
    reference.load_state_dict(model.state_dict())
    first = reference.affine("fc1").weight
    objective = loss.per_sample(reference(x), y).mean() + 0.8 * first.norm()
    gradient = torch.autograd.grad(objective, first)[0]
    expected = first.detach() - 0.1 * gradient
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    training_step(model, optimizer, "mean", x, y, loss, 0.0, 1, [False, False], first_layer_penalty=0.8)
    assert torch.allclose(model.affine("fc1").weight, expected, atol=1e-12)


def test_boundary_height_over_a_data_plane_is_exact_for_a_known_plane():
    """Data at z = 0.5, boundary the plane z = 0.5 + 0.2 + 0.1 x: the boundary's height above each point (u, v)
    of the data plane is 0.2 + 0.1 u, on the + side."""
    from omegaconf import OmegaConf

    from pexp.data.toys import grid25
    from pexp.eval.evaluate import boundary_height

    model = torch.nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.1, 0.0, -1.0]]))
        model.bias.fill_(0.7)
    data = grid25(OmegaConf.create(dict(plane="z05")))
    eval_cfg = OmegaConf.create(dict(view=[0.0, 1.0, 0.0, 1.0], surface_grid=5, max_distance=1.0,
                                     tolerance=1e-4))
    surface = boundary_height(model, data, eval_cfg, threshold=0.0)
    assert len(surface) == 25 and (surface["side"] == 1).all()
    assert torch.allclose(torch.tensor(surface["distance"].to_numpy()),
                          torch.tensor(0.2 + 0.1 * surface["u"].to_numpy()), atol=2e-4)


def test_dataset_pca_figure_table_from_stand_ins(tmp_path):
    from pexp.figures.compose import figure_command
    from pexp.figures.offmanifold import dataset_pca_claims, dataset_pca_table

    table, _ = dataset_pca_table(figure_command(["synthetic=true", "data.n_train=300", "data.n_test=10",
                                                 f"paths.output_dir={tmp_path}"]), "cpu", False)
    assert set(table["dataset"]) == {"cifar10", "mnist"} and set(table["data"]) == {"synthetic"}
    claims = dataset_pca_claims(table, {})
    assert len(claims) == 4 and all(c["data"] == "synthetic" for c in claims)
    assert all(isinstance(c["measured"], int) and c["measured"] <= 300 for c in claims)
