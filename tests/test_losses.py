"""The losses of pexp.losses: one class per conf/loss/<name>.yaml, and a new loss is one class plus one yaml
(shown with a hinge loss defined here and its yaml in a temporary config directory on Hydra's search path)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pexp import CONF_DIR
from pexp.config import ConfigError, validate_training
from pexp.eval.evaluate import evaluate
from pexp.losses import LOSSES, Loss, register
from pexp.train.ensemble import batchable, train_many
from pexp.train.loop import train


def test_every_loss_yaml_is_a_registered_loss():
    files = {path.stem: OmegaConf.load(path) for path in sorted((Path(CONF_DIR) / "loss").glob("*.yaml"))}
    assert set(files) == set(LOSSES)
    for stem, cfg in files.items():
        assert cfg.name == stem and LOSSES[stem].name == stem
        assert type(Loss.from_config(cfg)) is LOSSES[stem]


def test_loss_objects_read_their_config_once():
    mse = Loss.from_config(OmegaConf.create(dict(name="mse", output_divisor=5, targets=[-0.5, 0.5])))
    assert (mse.divisor, mse.low, mse.high, mse.decision_threshold) == (5.0, -0.5, 0.5, 0.0)
    simplex = Loss.from_config(OmegaConf.create(dict(name="simplex", classes=4, direction_rounds=3)))
    assert (simplex.classes, simplex.direction_rounds, simplex.decision_threshold) == (4, 3, 0.5)
    assert LOSSES["ce"]().direction_rounds is None  # Algorithm 1 pushes the score of every loss but the simplex's


@dataclass(frozen=True)
class Hinge(Loss):
    """max(0, 1 - s f) on one output, s = -1/+1 for classes 0/1: only its values (the gradient: autograd)."""

    def values(self, scaled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.relu(1 - (2 * targets - 1).to(scaled.dtype) * scaled[:, 0])


@pytest.fixture
def hinge(tmp_path):
    """The overrides that select the hinge loss: its class registered for this test, its yaml in a config
    directory of its own (nothing else of pexp knows it)."""
    (tmp_path / "conf" / "loss").mkdir(parents=True)
    (tmp_path / "conf" / "loss" / "hinge.yaml").write_text("# Hinge loss on one output; decides by f > 0.\n"
                                                           "name: hinge\noutputs: 1\n")
    register("hinge")(Hinge)
    try:
        yield [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "loss=hinge"]
    finally:
        del LOSSES["hinge"]


def compose_with(overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_a_registered_loss_is_validated_by_its_own_rule(hinge):
    cfg = compose_with(["experiment=om_fig2_a", *hinge])
    validate_training(cfg)
    assert Loss.from_config(cfg.loss) == Hinge() and cfg.model.outputs == 1
    with pytest.raises(ConfigError, match=r"^model.outputs=2 is not allowed with loss hinge: must be 1$"):
        validate_training(compose_with(["experiment=om_fig2_a", *hinge, "model.outputs=2"]))
    with pytest.raises(ConfigError, match=r"^loss.name='squared_hinge' is not allowed: choose one of mse, ce, "
                                          r"logistic, simplex, hinge$"):
        validate_training(compose_with(["experiment=om_fig2_a", *hinge, "loss.name=squared_hinge"]))


def test_default_gradient_is_the_hinge_gradient():
    loss = Hinge(divisor=2.0)
    outputs = torch.tensor([[3.0], [1.0], [-4.0], [0.5]], dtype=torch.float64)
    targets = torch.tensor([1, 0, 0, 1])
    values, gradient = loss.per_sample_and_gradient(outputs, targets)
    torch.testing.assert_close(values, torch.tensor([0.0, 1.5, 0.0, 0.75], dtype=torch.float64))
    torch.testing.assert_close(gradient, torch.tensor([[0.0], [0.5], [0.0], [-0.5]], dtype=torch.float64))


def test_a_registered_loss_trains_alone_and_together_and_is_evaluated(hinge, tmp_path):
    """offmanifold-fig2 (a)'s toy with the hinge loss: trained by the loop and, two seeds at once, by the toy
    ensemble (its backward pass starts from the loss's gradient), each to the target margin; then evaluated."""
    short = ["optim.lr=0.3", "train.epochs=800", "train.progress=false", "train.log_every=100",
             "train.checkpoint_every=100"]
    alone = compose_with(["experiment=om_fig2_a", *hinge, *short, f"paths.output_dir={tmp_path / 'alone'}"])
    together = [compose_with(["experiment=om_fig2_a", *hinge, *short, f"seed={seed}",
                              f"paths.output_dir={tmp_path / 'together'}"]) for seed in (1, 2)]
    assert all(batchable(cfg) for cfg in together)
    runs = [train(alone), *train_many(together)]
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["reached_target"] and metrics["final_margin"] >= 0.3 and metrics["train_accuracy"] == 1
        assert metrics["decision_threshold"] == 0.0
        log = pd.read_csv(run / "train_log.csv")
        assert log["loss"].iloc[-1] < log["loss"].iloc[0]
    assert "ensemble_size" in json.loads((runs[1] / "metrics.json").read_text())
    points = evaluate(runs[0], alone.eval, device="cpu", progress=False).query("kind == 'point'")
    assert len(points) == 7 and (points["distance"] > 0).all()  # every point on its side of f = 0
