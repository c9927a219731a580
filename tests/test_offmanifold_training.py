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
