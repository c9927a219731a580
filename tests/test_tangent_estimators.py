"""Paper TS: the estimators of eqs. (5)-(7) on a hand-computed trace, per-epoch weights, the evaluators and the
five tangent-* figures on tiny synthetic runs."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from pexp.eval.tangent import (add_estimates, estimate_accuracy, estimate_test, linear_layers,
                               mean_absolute_errors, membership_weights, psi_star)
from pexp.figures import FIGURES
from pexp.figures.base import make_figure

# Two epochs of training (states 0, 1, 2). psi*(3, mu, sigma) = (sigma^2 + mu^2)^2 since 1F1(-1; 1/2; z) = 1 - 2z.
TRACE = pd.DataFrame(dict(
    epoch=[0, 1, 2],
    train_loss=[2.0, 1.0, 0.5], test_loss=[2.0, 1.5, 1.2],
    train_accuracy=[0.1, 0.6, 0.8], test_accuracy=[0.1, 0.5, 0.6],
    log_w_product=[-10.0, -8.0, -5.0],                         # eq. (5): q = 1.25, 1.6
    mu_train=[1.0, 1.0, 1.0], sigma_train=[1.0, 1.0, 1.0],     # psi* = 4
    mu_test=[1.0, 1.0, 2.0], sigma_test=[1.0, 1.0, 1.0],       # psi* = 4, 4, 25: q = 1, 6.25
    sens_train=[1.0, 2.0, 2.0], sens_test=[1.0, 3.0, 4.0],     # eq. (7): ratio 1, 1.5, 2: q = 1.5, 4/3
))


def test_psi_star_of_the_trace():
    assert psi_star(3, 2.0, 1.0) == pytest.approx(25.0)


def test_estimators_reproduce_a_hand_computed_trace():
    out = add_estimates(TRACE.iloc[::-1], depth=3)  # rows in any order
    np.testing.assert_allclose(out["q_eq5"], [np.nan, 1.25, 1.6])
    np.testing.assert_allclose(out["q_eq6"], [np.nan, 1.0, 6.25])
    np.testing.assert_allclose(out["q_eq7"], [np.nan, 1.5, 4 / 3])
    # est(t) = train(t) * (test / train)(t-1) * q(t)
    np.testing.assert_allclose(out["loss_eq5"], [np.nan, 1.0 * 1.0 * 1.25, 0.5 * 1.5 * 1.6])
    np.testing.assert_allclose(out["loss_eq6"], [np.nan, 1.0, 0.5 * 1.5 * 6.25])
    np.testing.assert_allclose(out["loss_eq7"], [np.nan, 1.5, 1.0])
    # accuracy = 1 - estimated error, errors train 0.9, 0.4, 0.2 and test 0.9, 0.5, 0.4
    np.testing.assert_allclose(out["accuracy_eq5"], [np.nan, 0.5, 0.6])
    np.testing.assert_allclose(out["accuracy_eq7"], [np.nan, 0.4, 1 - 0.2 * 1.25 * 4 / 3])
    mae = mean_absolute_errors(out).set_index("estimator")
    assert mae.loc["eq5", "mae_loss"] == pytest.approx(0.125)
    assert mae.loc["eq6", "mae_loss"] == pytest.approx((0.5 + 3.4875) / 2)
    assert mae.loc["eq7", "mae_loss"] == pytest.approx(0.1)
    assert mae.loc["eq5", "mae_accuracy"] == pytest.approx(0.0, abs=1e-12)
    assert mae.loc["eq7", "mae_accuracy"] == pytest.approx((0.1 + (1 - 0.2 * 1.25 * 4 / 3 - 0.6)) / 2)
    assert (mae["epochs"] == 2).all()


def test_initial_anchor_and_accuracy_mode():
    q = np.array([np.nan, 1.25, 1.6])
    np.testing.assert_allclose(estimate_test(TRACE.train_loss, TRACE.test_loss, q, "initial"),
                               [np.nan, 1.25, 0.5 * 1.25 * 1.6])
    np.testing.assert_allclose(estimate_accuracy(TRACE.train_accuracy, TRACE.test_accuracy, q, mode="accuracy"),
                               [np.nan, 0.6 * 1.0 / 1.25, 0.8 * (0.5 / 0.6) / 1.6])
    with pytest.raises(ValueError, match="anchor='next' is not allowed"):
        estimate_test(TRACE.train_loss, TRACE.test_loss, q, "next")
    with pytest.raises(ValueError, match="one row per epoch"):
        add_estimates(TRACE.iloc[[0, 2]], depth=3)


def test_membership_weights_are_sigmoids_of_standardised_log_sensitivities():
    np.testing.assert_allclose(membership_weights(np.array([0.0, 1.0]), np.array([-1.0, 1.0])),
                               [0.5, 1 / (1 + np.exp(-1.0))])


def ts_overrides(tmp_path, epochs=2):
    return ["data=synthetic_cifar10", "data.n_train=128", "data.n_test=64", "model.widths=[12,10,8,6]",
            f"train.epochs={epochs}", "train.batch_size=32", "train.progress=false", "eval.n_train=40",
            "eval.n_test=30", f"paths.output_dir={tmp_path / 'outputs'}"]


def test_figures_and_evaluators_on_a_tiny_run(tmp_path):
    from pexp.eval.evaluate import evaluate
    from pexp.figures.compose import compose_experiment
    from pexp.train.loop import load_trained, state_path, train

    overrides = ts_overrides(tmp_path)
    written = {fig: make_figure(FIGURES[fig], overrides, tmp_path / "figures", progress=False)
               for fig in ("tangent-fig1", "tangent-fig2", "tangent-fig3", "tangent-fig4", "tangent-table2")}
    for fig, paths in written.items():
        assert all(path.exists() for path in paths.values())
        for item in json.loads(paths["claims.json"].read_text()):
            assert set(item) == {"claim", "measured", "expected", "holds", "data"}
            assert item["data"] == ("toy" if fig == "tangent-fig2" else "synthetic")
    table = pd.read_csv(written["tangent-table2"]["csv"])
    assert list(table["estimator"]) == ["eq5", "eq6", "eq7"] and (table["epochs"] == 2).all()
    markdown = written["tangent-table2"]["md"].read_text()
    assert "| eq. (7) empirical ||Sens||_F^2 |" in markdown and "4.2e-04" in markdown

    # the run kept every epoch's weights (0 = init), the last equal to the final model
    cfg = compose_experiment("ts_cifar10", ["eval=active", *overrides])
    run = train(cfg)
    assert [state_path(run, e).exists() for e in range(4)] == [True, True, True, False]
    model, _ = load_trained(run)
    final = torch.load(state_path(run, 2), weights_only=True)
    assert all(torch.equal(final[k], v) for k, v in model.state_dict().items())
    init = torch.load(state_path(run, 0), weights_only=True)
    assert not torch.equal(init["blocks.0.affine.weight"], final["blocks.0.affine.weight"])

    # active counts per layer and in total equal a direct count of the positive pre-activations
    counts = evaluate(run, cfg.eval, "cpu", progress=False)
    from pexp.data import load_dataset

    test_x = load_dataset(cfg.data).test.x
    h, direct = test_x.flatten(1), []
    for layer in linear_layers(model)[:-1]:
        z = h @ layer.weight.T + layer.bias
        direct.append((z > 0).sum(1))
        h = z.clamp(min=0)
    direct = torch.stack(direct, 1).numpy()
    test_rows = counts[counts["split"] == "test"]
    assert (counts["split"] == "train").sum() == 40 and len(test_rows) == 30  # eval.n_train / n_test subsets
    np.testing.assert_array_equal(test_rows[["layer1", "layer2", "layer3", "layer4"]].to_numpy(),
                                  direct[test_rows["index"].to_numpy()])
    np.testing.assert_array_equal(test_rows["total"], direct[test_rows["index"].to_numpy()].sum(1))

    # the per-epoch table: one row per state, measured losses equal the model's own
    estimates = pd.read_csv(written["tangent-fig3"]["csv"])
    assert list(estimates["epoch"]) == [0, 1, 2]
    last = estimates.iloc[-1]
    with torch.no_grad():
        logits = model(test_x)
    assert last["test_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(
        logits, load_dataset(cfg.data).test.y)), rel=1e-5)
    assert len(set(test_rows["index"])) == 30 and direct.sum(1).std() > 0  # distinct points, counts that vary


def test_tangent_evaluator_needs_the_epoch_states(tmp_path):
    from pexp.config import ConfigError
    from pexp.eval.evaluate import evaluate
    from pexp.figures.compose import compose_experiment
    from pexp.train.loop import train

    cfg = compose_experiment("ts_cifar10", ["eval=tangent", "train.keep_states=false", *ts_overrides(tmp_path, 1)])
    with pytest.raises(ConfigError, match="train.keep_states=true"):
        evaluate(train(cfg), cfg.eval, "cpu", progress=False)


def test_table1_variants_build_and_the_estimators_refuse_them():
    from omegaconf import OmegaConf

    from pexp.models import build_model

    cfg = OmegaConf.create(dict(name="mlp", widths=[6, 5], outputs=10, batch_norm=True, dropout=0.5))
    model = build_model(cfg, (1, 4, 4))
    assert model(torch.zeros(3, 1, 4, 4)).shape == (3, 10)
    assert isinstance(model.blocks[0].after, torch.nn.Dropout) and model.blocks[0].after.p == 0.5
    with pytest.raises(ValueError, match="block 0 .* is not allowed"):
        linear_layers(model)
