"""Paper TS: the estimators of eqs. (5)-(7) on a hand-computed trace, per-epoch weights, the evaluators and the
five tangent-* figures on tiny synthetic runs."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from pexp.eval.tangent import (ESTIMATOR_INPUTS, add_estimates, input_statistics, linear_layers,
                               log_psi_star, mean_absolute_errors, self_normalised_mean)
from pexp.figures import FIGURES
from pexp.figures.base import make_figure
from pexp.models import build_model, fold_batch_norm

from conftest import assert_judged

# Two epochs of training (states 0, 1, 2), label-free statistics plus the truth (test_loss, test_accuracy).
# psi*(3, mu, sigma) = (sigma^2 + mu^2)^2 since 1F1(-1; 1/2; -z) = 1 + 2z.
TRACE = pd.DataFrame(dict(
    epoch=[0, 1, 2],
    train_loss=[2.0, 1.0, 0.5], train_accuracy=[0.1, 0.6, 0.8],   # train errors 0.9, 0.4, 0.2
    test_loss=[2.0, 1.5, 1.2], test_accuracy=[0.1, 0.5, 0.6],
    log_w_product=[-10.0, -8.0, -5.0],             # eq. (5): q = 10/8, 8/5
    log_eq1_constant=[30.0, 30.0, 30.0],           # with constants: log Sens1 = 30 + 2 P = 10, 14, 20: q = 10/14, 0.7
    mu_T_train=[1.0, 1.0, 1.0], sigma_T_train=[1.0, 1.0, 1.0],   # psi* = 4
    mu_T_test=[1.0, 1.0, 2.0], sigma_T_test=[1.0, 1.0, 1.0],     # psi* = 4, 4, 25: q = 1, 1, 6.25
    log_sens_train=np.log([1.0, 2.0, 2.0]), log_sens_test=np.log([1.0, 3.0, 4.0]),  # eq. (7): q = 1, 1.5, 2
))


def test_estimators_reproduce_a_hand_computed_trace():
    out = add_estimates(TRACE.iloc[::-1], depth=3)  # rows in any order
    np.testing.assert_allclose(out["q_eq5"], [np.nan, 1.25, 1.6])
    np.testing.assert_allclose(out["q_eq5_constants"], [np.nan, 10 / 14, 0.7])
    np.testing.assert_allclose(out["q_eq6"], [1.0, 1.0, 6.25])
    np.testing.assert_allclose(out["q_eq7"], [1.0, 1.5, 2.0])
    # est(t) = q(t) * train(t): no test value anywhere
    np.testing.assert_allclose(out["loss_eq5"], [np.nan, 1.25, 0.8])
    np.testing.assert_allclose(out["loss_eq5_constants"], [np.nan, 10 / 14, 0.35])
    np.testing.assert_allclose(out["loss_eq6"], [2.0, 1.0, 3.125])
    np.testing.assert_allclose(out["loss_eq7"], [2.0, 1.5, 1.0])
    np.testing.assert_allclose(out["loss_baseline"], [2.0, 1.0, 0.5])
    # accuracy = 1 - q * train error; the other reading train accuracy / q
    np.testing.assert_allclose(out["accuracy_eq5"], [np.nan, 0.5, 0.68])
    np.testing.assert_allclose(out["accuracy_eq7"], [0.1, 0.4, 0.6])
    np.testing.assert_allclose(out["accuracy_direct_eq5"], [np.nan, 0.48, 0.5])
    mae = mean_absolute_errors(out).set_index("estimator")
    assert mae.loc["eq5", "mae_loss"] == pytest.approx((0.25 + 0.4) / 2)
    assert mae.loc["eq5", "mae_loss_over_64"] == pytest.approx((0.25 + 0.4) / 2 / 64)
    assert mae.loc["eq6", "mae_loss"] == pytest.approx((0.5 + 1.925) / 2)
    assert mae.loc["eq7", "mae_loss"] == pytest.approx(0.1)
    assert mae.loc["eq5", "mae_accuracy"] == pytest.approx(0.04)
    assert mae.loc["eq7", "mae_accuracy"] == pytest.approx(0.05)
    assert mae.loc["eq5", "mae_accuracy_direct"] == pytest.approx((0.02 + 0.1) / 2)
    # the baseline's MAE is the mean |test - train|; the scale columns cover epochs 1-2
    assert mae.loc["baseline", "mae_loss"] == pytest.approx(0.6) == mae.loc["eq5", "mean_gap_loss"]
    assert mae.loc["baseline", "mae_accuracy"] == pytest.approx(0.15) == mae.loc["eq7", "mean_gap_accuracy"]
    assert (mae["test_loss_min"] == 1.2).all() and (mae["test_loss_max"] == 1.5).all() and (mae["epochs"] == 2).all()
    # mean |estimate - train|: eq. (7) loss 1.5 vs 1.0, 1.0 vs 0.5; accuracy 0.4 vs 0.6, 0.6 vs 0.8
    assert mae.loc["eq7", "mean_shift_loss"] == pytest.approx(0.5) and mae.loc["eq7", "mean_shift_accuracy"] == \
        pytest.approx(0.2) and mae.loc["baseline", "mean_shift_loss"] == 0


def test_third_accuracy_reading_on_the_hand_computed_trace():
    out = add_estimates(TRACE, depth=3)
    # estimated test accuracy = q * train accuracy: q_eq5 = nan, 1.25, 1.6; q_eq7 = 1, 1.5, 2; train acc 0.1, 0.6, 0.8
    np.testing.assert_allclose(out["accuracy_times_q_eq5"], [np.nan, 0.75, 1.28])
    np.testing.assert_allclose(out["accuracy_times_q_eq7"], [0.1, 0.9, 1.6])
    np.testing.assert_allclose(out["accuracy_times_q_baseline"], [0.1, 0.6, 0.8])
    mae = mean_absolute_errors(out).set_index("estimator")  # test accuracy 0.5, 0.6 at epochs 1, 2
    assert mae.loc["eq5", "mae_accuracy_times_q"] == pytest.approx((0.25 + 0.68) / 2)
    assert mae.loc["eq7", "mae_accuracy_times_q"] == pytest.approx((0.4 + 1.0) / 2)
    assert mae.loc["baseline", "mae_accuracy_times_q"] == pytest.approx(0.15) == \
        mae.loc["baseline", "mean_gap_accuracy"]
    # a table cached before the reading existed (no accuracy_times_q_* columns) gives the same MAEs
    cached = out.drop(columns=[c for c in out.columns if c.startswith("accuracy_times_q_")])
    pd.testing.assert_frame_equal(mean_absolute_errors(cached), mean_absolute_errors(out))
    # the window 1..1 of the same trace
    first = mean_absolute_errors(out, last_epoch=1).set_index("estimator")
    assert first.loc["eq7", "mae_accuracy_times_q"] == pytest.approx(0.4) and (first["epochs"] == 1).all()
    with pytest.raises(ValueError, match="last_epoch=0 is not allowed"):
        mean_absolute_errors(out, last_epoch=0)


def test_no_estimate_depends_on_test_labels_or_test_losses():
    changed = TRACE.assign(test_loss=[9.0, 0.1, 7.0], test_accuracy=[0.9, 0.05, 0.3], extra=[1, 2, 3])
    before, after = add_estimates(TRACE, depth=3), add_estimates(changed, depth=3)
    estimates = [c for c in before.columns if c.startswith(("q_", "loss_", "accuracy_"))]
    assert len(estimates) == 25
    pd.testing.assert_frame_equal(before[estimates], after[estimates])
    assert not {"test_loss", "test_accuracy"} & set(ESTIMATOR_INPUTS)
    # and each label-free input does matter
    for column in ("log_w_product", "mu_T_test", "log_sens_test", "train_loss"):
        moved = add_estimates(TRACE.assign(**{column: TRACE[column] * 1.1 + 0.1}), depth=3)
        assert not np.allclose(moved[estimates].fillna(0), before[estimates].fillna(0)), column
    with pytest.raises(ValueError, match="one row per epoch"):
        add_estimates(TRACE.iloc[[0, 2]], depth=3)


def test_membership_log_weights_are_a_product_of_sigmoids():
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(dict(name="mlp", widths=[5, 4, 3], outputs=3)), (6,)).double()
    x = torch.randn(7, 6, dtype=torch.float64)
    stats = input_statistics(model, x, batch_size=3)
    h, probability, active = x, torch.ones(7, dtype=torch.float64), torch.zeros(7, dtype=torch.long)
    for block in model.blocks[:-1]:
        z = block.affine(h)
        unit = torch.sigmoid(z)
        probability *= torch.where(z > 0, unit, 1 - unit).prod(1)  # eq. (4): sigma(h) if active, 1 - sigma(h) if not
        active += (z > 0).sum(1)
        h = torch.relu(z)
    np.testing.assert_allclose(stats["log_weight"], torch.log(probability).detach().numpy(), rtol=1e-12)
    np.testing.assert_array_equal(stats["active"], active.numpy())
    assert 0 < active.min() and active.max() < 12  # both kinds of units present


def test_self_normalised_mean_is_invariant_to_a_common_shift():
    values = np.array([1.0, 4.0, 0.5, 2.0])
    log_weights = np.array([-300.0, -301.0, -299.5, -302.0])  # exp underflows to ~1e-130: fine in log space
    log_mean, ess = self_normalised_mean(values, log_weights)
    weights = np.exp(log_weights + 300)
    assert np.exp(log_mean) == pytest.approx((weights * values).sum() / weights.sum(), rel=1e-12)
    assert ess == pytest.approx(weights.sum() ** 2 / (weights ** 2).sum(), rel=1e-12)
    shifted = self_normalised_mean(values, log_weights + 1000.0)
    assert shifted == pytest.approx((log_mean, ess), rel=1e-12)
    assert self_normalised_mean(values, np.zeros(4)) == pytest.approx((np.log(values.mean()), 4.0))
    with pytest.raises(ValueError, match="one log-weight per value"):
        self_normalised_mean(values, log_weights[:3])


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 9])
@pytest.mark.parametrize("mu,sigma", [(0.0, 1.0), (1.3, 0.9), (200.0, 20.0), (185.0, 31.0), (400.0, 0.5),
                                      (3.0e3, 1.0), (1.0e4, 1.0e-2)])
def test_log_psi_star_matches_a_direct_evaluation(k, mu, sigma):
    """psi* = sigma^(2(k-1)) 1F1(-(k-1)/2; 1/2; -mu^2 / (2 sigma^2))^2 in 60-digit arithmetic, logged."""
    import mpmath  # a dependency of torch (through sympy)
    with mpmath.workdps(60):
        kummer = mpmath.hyp1f1(mpmath.mpf(1 - k) / 2, mpmath.mpf(1) / 2, -mpmath.mpf(mu) ** 2 / (2 * mpmath.mpf(sigma) ** 2))
        direct = float(2 * (k - 1) * mpmath.log(sigma) + 2 * mpmath.log(kummer))
    assert log_psi_star(k, mu, sigma) == pytest.approx(direct, rel=1e-9, abs=1e-9)


def test_log_psi_star_is_vectorised():
    mus, sigmas = np.array([180.0, 200.0]), np.array([20.0, 25.0])
    np.testing.assert_allclose(log_psi_star(5, mus, sigmas), [log_psi_star(5, m, s) for m, s in zip(mus, sigmas)])


def ts_overrides(tmp_path, epochs=2):
    return ["data=synthetic_cifar10", "data.n_train=128", "data.n_test=64", "model.widths=[12,10,8,6]",
            f"train.epochs={epochs}", "train.batch_size=32", "train.progress=false", "eval.n_train=40",
            "eval.n_test=30", f"paths.output_dir={tmp_path / 'outputs'}"]


@pytest.mark.slow
def test_figures_and_evaluators_on_a_tiny_run(tmp_path):
    from pexp.eval.evaluate import evaluate
    from pexp.figures.compose import compose_experiment
    from pexp.train.loop import load_trained, state_path, train

    overrides = ts_overrides(tmp_path)
    written = {fig: make_figure(FIGURES[fig], overrides, tmp_path / "figures", progress=False)
               for fig in ("tangent-fig1", "tangent-fig2", "tangent-fig3", "tangent-fig4", "tangent-table2")}
    for fig, paths in written.items():
        assert all(path.exists() for path in paths.values())
        for item in assert_judged(json.loads(paths["claims.json"].read_text())):
            assert {"claim", "measured", "expected", "holds", "data", "judged"} <= set(item) <= {
                "claim", "measured", "expected", "holds", "data", "judged", "diagnosis"}
            assert item["data"] == ("toy" if fig == "tangent-fig2" else "synthetic")
    table = pd.read_csv(written["tangent-table2"]["csv"])
    estimators = ["eq5", "eq5_constants", "eq6", "eq7", "baseline"]
    assert list(table["variant"].unique()) == ["plain", "batch_norm", "dropout", "mean of the 3 variants"]
    assert list(table["estimator"]) == estimators * 6 * 4 and list(table["window"].unique()) == [1, 3, 5, 10, 20, 50]
    assert (table["epochs"] == table["window"].clip(upper=2)).all() and (table["capped"] == (table["window"] > 2)).all()
    np.testing.assert_allclose(table["mae_loss_over_64"], table["mae_loss"] / 64)
    markdown = written["tangent-table2"]["md"].read_text()
    assert "| eq. (7) eq.-(4)-weighted squared Sens norm |" in markdown and "4.2e-04" in markdown and "hypothesis" in markdown
    claims = json.loads(written["tangent-table2"]["claims.json"].read_text())
    assert any("HYPOTHESIS" in item["claim"] for item in claims)

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


def test_batch_norm_folding_gives_the_eval_mode_outputs():
    torch.manual_seed(0)
    cfg = OmegaConf.create(dict(name="mlp", widths=[6, 5, 4], outputs=3, batch_norm=True, dropout=0.5))
    model = build_model(cfg, (1, 3, 3)).double()
    assert isinstance(model.blocks[0].after, torch.nn.Identity)  # Table 1: no dropout after hidden layer 1
    assert isinstance(model.blocks[1].after, torch.nn.Dropout) and model.blocks[1].after.p == 0.5
    with pytest.raises(ValueError, match="block 0 .* is not allowed"):
        linear_layers(model)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(30):  # running statistics and affine parameters away from their defaults
        x = torch.randn(16, 1, 3, 3, dtype=torch.float64) * 2 + 0.5
        loss = (model(x) - 1).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    norm = model.blocks[0].activation[0]
    assert norm.running_mean.abs().min() > 0 and (norm.weight - 1).abs().min() > 0
    folded = fold_batch_norm(model)
    assert model.training and not folded.training  # a copy: the model itself is untouched
    x = torch.randn(10, 1, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-12, atol=1e-12)
    assert len(linear_layers(folded)) == 4
    assert input_statistics(folded, x)["sensitivity"].shape == (10,)
