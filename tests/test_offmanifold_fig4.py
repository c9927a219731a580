"""Paper OM in the authors' setups: fig6's depth, the fig4 data, networks, stopping rule, evaluator and figure,
the fig3 penalty readings and the fig2 / fig6 second statistic."""
import json
import math

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from pexp.config import ConfigError, validate_config, validate_training
from pexp.data import load_dataset
from pexp.figures.compose import compose_experiment
from pexp.models import build_model

from conftest import assert_judged

OM_EXPERIMENTS = ["om_fig2_a", "om_fig2_b", "om_fig2_c", "om_fig3_a", "om_fig3_b", "om_fig3_c", "om_fig3_c_bias",
                  "om_fig3_c_squared", "om_fig4_sphere", "om_fig4_sphere_authors", "om_fig4_mnist", "om_fig5_a",
                  "om_fig5_b", "om_fig5_c", "om_fig5_code_a", "om_fig5_code_b", "om_fig5_code_c", "om_fig6_a",
                  "om_fig6_b", "om_fig6_c"]
INPUT_SHAPES = {"diagonal7": (2,), "grid25": (3,), "sphere": (784,), "mnist_pca32": (1, 28, 28)}


@pytest.mark.parametrize("experiment", OM_EXPERIMENTS)
def test_each_om_experiment_composes_and_instantiates(experiment):
    cfg = compose_experiment(experiment)
    validate_training(cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, INPUT_SHAPES[cfg.data.name], cfg.init)
    assert model(torch.zeros(2, *INPUT_SHAPES[cfg.data.name])).shape == (2, cfg.model.outputs)


@pytest.mark.parametrize("setting", ["a", "b", "c"])
def test_fig6_builds_five_linear_layers_with_the_default_init(setting):
    cfg = compose_experiment(f"om_fig6_{setting}")
    torch.manual_seed(0)
    model = build_model(cfg.model, (2,), cfg.init)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 5 and [m.out_features for m in linear] == [100, 100, 100, 100, 1]
    assert cfg.init.get("scheme", "default") == "default"
    bound = 100 ** -0.5 / (3 if setting == "b" else 1)  # PyTorch's U(-1/sqrt(fan_in), ..), divided by 3 in (b)
    assert float(linear[2].weight.abs().max()) <= bound and float(linear[2].weight.abs().max()) > 0.9 * bound


def test_fig4_networks_have_no_biases():
    for experiment, widths in (("om_fig4_sphere", [784, 784, 784, 1]), ("om_fig4_mnist", [784, 784, 784, 10])):
        cfg = compose_experiment(experiment)
        model = build_model(cfg.model, INPUT_SHAPES[cfg.data.name], cfg.init)
        linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert [linear[0].in_features] + [m.out_features for m in linear] == widths
        assert all(m.bias is None for m in linear)
    with pytest.raises(ConfigError, match=r"model.bias='no' is not allowed"):
        build_model(OmegaConf.create(dict(name="mlp", widths=[3], outputs=1, bias="no")), (2,))


def test_sphere_radius_subspace_and_random_balanced_labels():
    cfg = compose_experiment("om_fig4_sphere", ["data.n_train=400", "data.n_test=100"]).data
    data = load_dataset(cfg)
    basis = data.subspace
    assert basis.shape == (28, 784) and torch.allclose(basis @ basis.T, torch.eye(28), atol=1e-5)
    for split, n in ((data.train, 400), (data.test, 100)):
        assert split.x.shape == (n, 784)
        assert (split.x.norm(dim=1) - 28).abs().max() < 1e-3
        assert (split.x - (split.x @ basis.T) @ basis).norm(dim=1).max() < 1e-3
        assert torch.bincount(split.y).tolist() == [n // 2, n // 2]  # balanced
    coordinates = data.train.x @ basis.T  # random labels: no intrinsic coordinate predicts them
    signs = 2 * data.train.y.float() - 1
    assert (coordinates * signs[:, None]).mean(0).abs().max() < 0.25 * coordinates.abs().mean()
    other = load_dataset(OmegaConf.merge(cfg, dict(seed=1)))
    assert not torch.equal(other.train.y, data.train.y)
    old = load_dataset(OmegaConf.merge(cfg, dict(radius=1.0, labels="halfspace")))  # the earlier variant
    assert torch.equal(old.train.y, ((old.train.x @ old.subspace[0]) > 0).long())
    with pytest.raises(ValidationError, match=r"Invalid value 'odd', expected one of \[random, halfspace\]"):
        OmegaConf.merge(cfg, dict(labels="odd"))  # the data set's schema (the command line: one line, exit 2)


def test_linear_projection_keeps_mnist_in_the_span_of_the_32_directions():
    cfg = compose_experiment("om_fig4_mnist", ["synthetic=true", "data.n_train=300", "data.base.n_train=600",
                                               "data.base.n_test=100"]).data
    assert cfg.projection == "none" and cfg.base.name == "synthetic_mnist"  # the default: trained on the images
    cfg = OmegaConf.merge(cfg, dict(projection="linear"))
    data = load_dataset(cfg)
    basis = data.subspace
    assert basis.shape == (32, 784) and torch.allclose(basis @ basis.T, torch.eye(32), atol=1e-5)
    for split in (data.train, data.test):
        flat = split.x.reshape(len(split), -1)
        assert (flat - flat @ basis.T @ basis).abs().max() < 1e-4  # in the span itself, not an affine copy
    assert set(data.train.y.tolist()) == set(range(10))
    binary = load_dataset(OmegaConf.merge(cfg, dict(projection="affine", positive=[5, 6, 7, 8, 9])))
    flat = binary.train.x.reshape(len(binary.train), -1)
    assert (flat - flat @ basis.T @ basis).abs().max() > 1e-2 and set(binary.train.y.tolist()) == {0, 1}
    raw = load_dataset(OmegaConf.merge(cfg, dict(projection="none")))  # the images as they are, the same V
    base = load_dataset(cfg.base)
    assert torch.equal(raw.subspace, basis) and torch.equal(raw.test.x, base.test.x)
    assert torch.equal(raw.train.x, base.train.x[:len(raw.train)]) and torch.equal(raw.train.y, data.train.y)
    with pytest.raises(ValidationError, match=r"Invalid value 'pca', expected one of \[linear, affine, none\]"):
        OmegaConf.merge(cfg, dict(projection="pca"))


def test_mnist_defaults_are_the_authors_training_and_attack():
    from pexp.eval.margin import SearchSettings

    cfg = compose_experiment("om_fig4_mnist")
    assert list(cfg.optim.lr_milestones) == [40, 80] and cfg.optim.lr_milestone_factor == 0.1
    assert cfg.optim.lr == 1e-3 and cfg.optim.momentum == 0 and cfg.train.batch_size == 200
    assert (cfg.train.target_accuracy, cfg.train.target_split, cfg.train.epochs) == (0.87, "test", 12000)
    from pexp.train.loop import stop_rule

    assert [done for done in range(1, 20) if stop_rule(cfg).checked(done)] == [1, 6, 11, 16]
    assert SearchSettings.from_config(cfg.eval).reproject is True and cfg.data.projection == "none"
    with pytest.raises(ConfigError, match=r"eval.reproject='yes' is not allowed: must be true or false"):
        validate_config(compose_experiment("om_fig4_mnist", ["eval.reproject=yes"]))


def test_training_stops_at_the_target_accuracy(tmp_path):
    cfg = compose_experiment("om_fig4_sphere", [
        f"paths.output_dir={tmp_path}", "train.progress=false", "data.n_train=60", "data.n_test=20",
        "model.widths=[64,64]", "optim.lr=0.05", "train.batch_size=20", "train.epochs=400", "train.log_every=1",
        "train.checkpoint_every=1"])
    from pexp.train.loop import train

    run = train(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["reached_target"] and metrics["train_accuracy"] == 1.0
    log = pd.read_csv(run / "train_log.csv")
    assert log["train_error"].iloc[-1] == 0 and (log["train_error"].iloc[:-1] > 0).all()  # stopped at once
    with pytest.raises(ConfigError, match=r"train.target_split='val' is not allowed: choose one of train, test"):
        compose_experiment("om_fig4_sphere", ["train.target_split=val"])


def test_first_layer_penalty_readings():
    from pexp.losses import first_layer_norm

    model = build_model(OmegaConf.create(dict(name="mlp", widths=[4], outputs=1)), (3,))
    weight, bias = model.affine("fc1").weight, model.affine("fc1").bias
    assert torch.isclose(first_layer_norm(model, "norm"), weight.norm())
    assert torch.isclose(first_layer_norm(model, "norm_with_bias"), (weight.norm() ** 2 + bias.norm() ** 2).sqrt())
    assert torch.isclose(first_layer_norm(model, "half_squared"), weight.norm() ** 2 / 2)
    for name in ("c_bias", "c_squared"):
        assert compose_experiment(f"om_fig3_{name}").optim.first_layer_penalty == 0.8


def test_second_statistic_uses_the_inner_five_points_capped_at_3():
    from pexp.figures.offmanifold import seed_means

    rows = [dict(seed=seed, index=i, distance=value) for seed, values in
            ((1, [0.1, 1.0, 2.0, math.inf, 0.5, 1.5, 9.0]), (2, [5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 5.0]))
            for i, value in enumerate(values)]
    means = seed_means(pd.DataFrame(rows))
    assert means.to_dict() == pytest.approx({1: (1.0 + 2.0 + 3.0 + 0.5 + 1.5) / 5, 2: 1.0})


def fig4_rows(dataset, factor, seed, mode, distances):
    return [dict(dataset=dataset, factor=factor, seed=seed, mode=mode, distance=d, misclassified=d == 0,
                 censored=math.isinf(d), reached_target=True, data="toy") for d in distances]


def test_fig4_summary_min_max_censored_and_gap_to_the_published_values():
    from pexp.figures.offmanifold import PUBLISHED_FIG4, projected_claims, projected_summary

    rows = []
    for seed, scale in ((1, 1.0), (2, 2.0)):
        rows += fig4_rows("sphere", 1.0, seed, "complement", [0.0, 2.0 * scale, 4.0 * scale, math.inf])
    table = pd.DataFrame(rows)
    summary = projected_summary(table).iloc[0]
    # per training: the mean over the points flipped (0 for a misclassified one), the censored one left out
    assert summary["min"] == pytest.approx(2.0) and summary["max"] == pytest.approx(4.0)
    assert summary["mean"] == pytest.approx(3.0) and summary["censored"] == 2 and summary["misclassified"] == 2
    published = PUBLISHED_FIG4["sphere"]["complement"][1]
    assert summary["gap"] == pytest.approx((3.0 - published) / published)
    claims = assert_judged(projected_claims(table, {}))
    beside = [c for c in claims if c["claim"] == "sphere: off the subspace distance beside the published values"][0]
    gap = abs(3.0 - published) / published
    assert beside["judged"] == f"largest gap {100 * gap:.3g}% (factor 1); factors missing: 0.5, 3, 5, 7"
    assert "diagnosis" not in beside  # within 30% where measured: it fails for the factors missing alone
    assert beside["measured"]["by_factor"][1.0]["censored"] == 2 and not beside["holds"]  # factors are missing
    assert 0.5 in beside["measured"]["factors_missing"]
    assert "sphere panel is not public" in beside["expected"]
    published_shape = [c for c in claims if "(published)" in c["claim"]]
    assert published_shape and all(c["holds"] for c in published_shape)  # the paper's curves meet its claim


def test_fig4_the_authors_statistic_counts_censored_points_where_their_walk_ended():
    from pexp.figures.offmanifold import PUBLISHED_FIG4, projected_claims, projected_summary

    rows = fig4_rows("mnist", 7.0, 1, "complement", [0.0, 2.0, 4.0, math.inf])
    for row, end in zip(rows, [0.0, 2.0, 4.0, 10.0]):
        row["end"] = end
    summary = projected_summary(pd.DataFrame(rows)).iloc[0]
    assert summary["mean"] == pytest.approx(2.0) and summary["mean_at_end"] == pytest.approx(4.0)
    published = PUBLISHED_FIG4["mnist"]["complement"][7]
    assert summary["gap_at_end"] == pytest.approx((4.0 - published) / published)
    beside = [c for c in assert_judged(projected_claims(pd.DataFrame(rows), {}))
              if c["claim"] == "mnist: off the subspace distance beside the published values"][0]
    assert beside["measured"]["judged_on"] == "gap_at_end"
    assert "module that loads her MNIST training images is not public" in beside["diagnosis"]
    assert beside["measured"]["largest_relative_gap"] == pytest.approx(abs(4.0 - published) / published)
    old = projected_summary(pd.DataFrame(rows).drop(columns="end")).iloc[0]  # results without the column
    assert math.isnan(old["mean_at_end"]) and old["gap_at_end"] is None and old["mean"] == pytest.approx(2.0)


TINY_SPHERE = ["train.progress=false", "data.n_train=40", "data.n_test=10", "data.radius=1.0", "model.widths=[32,32]",
               "optim.lr=0.2", "train.batch_size=20", "train.epochs=300", "eval.n_points=12", "eval.walk_step=0.05"]


def test_fig4_evaluator_three_modes_walk_and_censored_points(tmp_path):
    from pexp.eval.evaluate import evaluate
    from pexp.train.loop import load_trained, train

    cfg = compose_experiment("om_fig4_sphere", [f"paths.output_dir={tmp_path}", *TINY_SPHERE, "eval.steps=5"])
    assert cfg.eval.search == "walk" and cfg.eval.objective == "margin" and not cfg.eval.random_start
    run = train(cfg)
    table = evaluate(run, cfg.eval, progress=False)
    assert sorted(set(table["mode"])) == ["complement", "subspace", "unrestricted"]
    assert (table.groupby("mode").size() == 12).all() and table["index"].tolist()[:12] == list(range(12))
    censored = table["censored"].astype(bool)
    assert censored.any() and (censored == table["distance"].apply(math.isinf)).all()  # 5 steps of 0.05: at most 0.25
    flipped = table.loc[~censored & (table["distance"] > 0), "distance"]
    assert len(flipped) and (flipped <= 5 * 0.05 + 1e-6).all()
    # where each walk ended: at its flip, or after its 5 steps (censored: at most 0.25 out, and not at 0)
    assert (table.loc[~censored, "end"] - table.loc[~censored, "distance"]).abs().max() < 1e-5
    ends = table.loc[censored, "end"]
    assert ((ends > 0) & (ends <= 5 * 0.05 + 1e-6)).all()
    # the walk stops at the first flip: just short of the recorded size, along the (projected) walk, nothing flipped
    model, _ = load_trained(run)
    data = load_dataset(cfg.data)
    x = data.train.x[:12]
    with torch.no_grad():
        assert torch.equal((model(x)[:, 0] > 0).long()[~torch.tensor(table["misclassified"].tolist()[:12])],
                           data.train.y[:12][~torch.tensor(table["misclassified"].tolist()[:12])])


def test_fig4_figure_takes_the_factors_of_the_runs_found(tmp_path):
    from pexp.figures import FIGURES
    from pexp.figures.base import write_figure
    from pexp.figures.compose import figure_command
    from pexp.figures.offmanifold import FIG4_EXPERIMENTS, projected_table, sweep_configs
    from pexp.train.loop import train

    overrides = [f"paths.output_dir={tmp_path}", "train.progress=false", "data.n_train=40", "data.n_test=10",
                 "model.widths=[16,16]", "train.epochs=20", "train.batch_size=20", "optim.lr=0.01",
                 "eval.n_points=6", "eval.steps=200", "synthetic=true"]  # both data sets take them
    sphere = FIG4_EXPERIMENTS["sphere"]
    for factor in (1, 3):  # what a sweep over two factors leaves behind
        train(compose_experiment(sphere, [*overrides, f"init.factor={factor}", "seed=2"]))
    found = sweep_configs(sphere, overrides)
    assert sorted((float(c.init.factor), int(c.seed)) for c in found) == [(1.0, 2), (3.0, 2)]
    untouched = sweep_configs(sphere, [*overrides, "data.n_train=41"])  # another config: the sweep's grid
    assert len(untouched) == 25
    mnist = [*overrides, "sweep.factors=[0.5]", "sweep.seeds=[1]"]
    table, metrics = projected_table(figure_command(mnist), "cpu", False)
    assert set(table.loc[table["dataset"] == "sphere", "factor"]) == {1.0, 3.0}
    assert set(table.loc[table["dataset"] == "mnist", "factor"]) == {0.5}  # none found: the sweep's own grid
    paths = write_figure(FIGURES["offmanifold-fig4"], table, metrics, tmp_path / "figures")
    claims = assert_judged(json.loads(paths["claims.json"].read_text()))
    assert any(c["claim"].startswith("sphere: off the subspace distance beside the published") for c in claims)
    assert "censored" in pd.read_csv(paths["csv"]).columns


def test_where_the_base_data_set_is_found_does_not_change_the_run():
    from pexp.runs import training_run_dir

    plain = compose_experiment("om_fig4_mnist")
    elsewhere = compose_experiment("om_fig4_mnist", ["data.base.verify_checksums=false", "data.base.root=/x",
                                                     "data.base.download=false"])
    assert training_run_dir(plain).path == training_run_dir(elsewhere).path
    assert training_run_dir(plain).path != training_run_dir(compose_experiment("om_fig4_mnist",
                                                                               ["data.base.n_train=10"])).path


def test_learning_rate_schedule_milestones_and_steps():
    from pexp.train.optim import LrSchedule

    milestones = LrSchedule.of(OmegaConf.create(dict(lr=1e-3, lr_milestones=[40, 80])))
    assert not milestones.constant
    assert [milestones.at(epoch, 0) for epoch in (0, 39, 40, 79, 80, 500)] == \
        [1e-3, 1e-3, 1e-3 * 0.1, 1e-3 * 0.1, 1e-3 * 0.1 * 0.1, 1e-3 * 0.1 * 0.1]  # one factor at a time, as torch
    steps = LrSchedule.of(OmegaConf.create(dict(lr=1e-4, lr_step_every=10000, lr_step_factor=1.1)))
    assert [steps.at(3, step) for step in (0, 9999, 10000, 20000)] == [1e-4, 1e-4, 1e-4 * 1.1, 1e-4 * 1.1 * 1.1]
    assert LrSchedule.of(OmegaConf.create(dict(lr=0.1))).constant
    for key, value, allowed in (("lr_milestones", "[0]", "integers >= 1"), ("lr_milestone_factor", "0", "> 0"),
                                ("lr_step_every", "0.5", "an integer >= 1")):
        with pytest.raises(ConfigError, match=rf"optim.{key}=.* is not allowed: must be .*{allowed}"):
            validate_training(compose_experiment("om_fig4_sphere", [f"+optim.{key}={value}"]))


TINY_TRAIN = ["train.progress=false", "data.n_train=40", "data.n_test=10", "model.widths=[16,16]", "optim.lr=0.05",
              "train.batch_size=20", "train.log_every=1", "train.checkpoint_every=1", "+train.keep_states=true"]


def _first_layer(run, epoch):
    from pexp.train.loop import state_path

    return torch.load(state_path(run, epoch), weights_only=False)["blocks.0.affine.weight"].double()


@pytest.mark.parametrize("schedule", [["+optim.lr_milestones=[2]", "+optim.lr_milestone_factor=1e-12"],
                                      ["+optim.lr_step_every=4", "+optim.lr_step_factor=1e-12"]])
def test_the_training_loop_follows_the_learning_rate_schedule(tmp_path, schedule):
    """After 2 epochs (epoch milestone 2, or 4 steps of 2 per epoch) the rate drops by 1e12: the weights stop."""
    from pexp.train.loop import train

    cfg = compose_experiment("om_fig4_sphere", [f"paths.output_dir={tmp_path}", *TINY_TRAIN, "train.epochs=4",
                                                "train.target_accuracy=null", *schedule])
    run = train(cfg)
    moved = [float((_first_layer(run, e + 1) - _first_layer(run, e)).norm()) for e in range(4)]
    assert moved[0] > 0 and moved[1] > 0
    assert moved[2] < 1e-6 * moved[1] and moved[3] < 1e-6 * moved[1]


def test_stop_rule_looked_at_only_every_n_epochs(tmp_path):
    from pexp.train.loop import stop_rule, train

    def run_with(*extra):
        cfg = compose_experiment("om_fig4_sphere", [f"paths.output_dir={tmp_path}", *TINY_TRAIN, "train.epochs=400",
                                                    *extra])
        run = train(cfg)
        return pd.read_csv(run / "train_log.csv"), json.loads((run / "metrics.json").read_text())

    every_epoch, _ = run_with()
    first_fit = int(every_epoch["epoch"].iloc[-1])
    assert every_epoch["train_error"].iloc[-1] == 0 and first_fit > 1
    # looked at after epochs 1, 1 + n, 1 + 2n, ... with n = first_fit: never after first_fit itself
    log, metrics = run_with(f"+train.target_check_every={first_fit}", "+train.target_check_first=1")
    stopped = int(log["epoch"].iloc[-1])
    assert metrics["reached_target"] and (stopped - 1) % first_fit == 0 and stopped > first_fit
    assert log.loc[log["epoch"] == first_fit, "train_error"].item() == 0  # fitted then, not looked at
    checked = log[(log["epoch"] - 1) % first_fit == 0]
    assert (checked["train_error"].iloc[:-1] > 0).all() and checked["train_error"].iloc[-1] == 0
    rule = stop_rule(compose_experiment("om_fig4_sphere_authors"))
    assert [done for done in range(1, 35) if rule.checked(done)] == [10, 20, 30]
    with pytest.raises(ConfigError, match=r"train.target_check_every=0 is not allowed: must be an integer >= 1"):
        validate_training(compose_experiment("om_fig4_sphere", ["+train.target_check_every=0"]))


class Kink(torch.nn.Module):
    """Two logits (0, g), g(x) = min(x.u, m) + x_3 - c: the margin walk from label 0 goes along u until x.u passes
    m, then along e_3. It records its last input (the walk's last iterate: the one that flipped)."""

    def __init__(self, u, m, c):
        super().__init__()
        self.u, self.m, self.c = torch.nn.Parameter(u, requires_grad=False), m, c

    def forward(self, x):
        self.last = x.detach().clone()
        g = torch.minimum(x @ self.u, torch.full_like(x[:, 0], self.m)) + x[:, 2] - self.c
        return torch.stack([torch.zeros_like(g), g], 1)


@pytest.mark.parametrize("reproject", [False, True])
def test_the_walk_reprojects_what_the_box_clipped(reproject):
    """In float64: the walk restricted to span(u, e_3), u = (2, 1, 0)/sqrt(5), from (0.8, 0.4, 0) meets the face
    x_1 = 1 of the box while going along u, then turns to e_3 and flips there. The box cuts the step at the face off
    the subspace; re-projecting every step brings the perturbation back into it (to rounding); projecting only the
    gradient leaves that cut in the perturbation to the end."""
    from pexp.eval.margin import minimal_perturbation

    u = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64) / 5 ** 0.5
    basis = torch.stack([u, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)])
    x0 = torch.tensor([[0.8, 0.4, 0.0]], dtype=torch.float64)
    model = Kink(u, 1.115, 1.115 + 0.9)
    size = minimal_perturbation(model, x0, torch.tensor([0]), norm="l2", bounds=(-1.0, 1.0), directions=basis,
                                search="walk", walk_step=0.05, steps=8000, eps_max=60.0, reproject=reproject)
    delta = model.last - x0
    assert float(model.last[0, 0]) == pytest.approx(1.0, abs=1e-12)  # the box binds at the flip
    assert float(size[0]) == pytest.approx(float(delta.norm()), rel=1e-12)
    off = float((delta - delta @ basis.T @ basis).norm())
    assert (off < 1e-9) if reproject else (off > 1e-3)
