"""Every YAML under conf/ composes; experiments instantiate; bad values stop with one clear line."""
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pexp import CONF_DIR
from pexp.cli import compose_config
from pexp.config import ConfigError, layer_names, validate_eval, validate_training
from pexp.data import load_dataset
from pexp.figures.compose import STAND_INS
from pexp.models import build_model

from conftest import ROOT, TINY

GROUPS = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir())
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((Path(CONF_DIR) / group).glob("*.yaml"))]


def compose_with(overrides):
    return compose_config(overrides)  # a value of a type or name its schema does not allow: ConfigError


def test_every_group_has_options():
    assert {"data", "model", "loss", "perturb", "init", "optim", "train", "eval", "experiment"} <= set(GROUPS)


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_yaml_composes(group, option):
    cfg = compose_with([f"{group}={option}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if group not in ("paths", "scale"):
        validate_training(cfg)
        validate_eval(cfg)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml")))
def test_every_experiment_instantiates_its_model_and_data(experiment):
    cfg = compose_with([f"experiment={experiment}"])
    if cfg.data.name == "cifar2":  # the synthetic stand-in: tests never need real data
        tiny = [o for o in TINY if cfg.model.name == "pe_net" or not o.startswith("model.size")]
        cfg = compose_with([f"experiment={experiment}", *tiny])
    elif cfg.data.name in STAND_INS:
        cfg = compose_with([f"experiment={experiment}", f"data={STAND_INS[cfg.data.name]}", "data.n_train=50",
                            "data.n_test=20"])
    validate_training(cfg)
    data = load_dataset(cfg.data)
    model = build_model(cfg.model, data.input_shape, cfg.init)
    assert model(data.train.x[:2]).shape == (2, cfg.model.outputs)
    assert cfg.run_name  # runs of one family share a run_name (e.g. alg1_all for pe_alg1 and richness_fig2_all)


def test_richness_fig2_experiments_differ_only_in_perturbed_layers():
    every = compose_with(["experiment=richness_fig2_all"])
    first = compose_with(["experiment=richness_fig2_first"])
    assert every.perturb.layers == "all" and first.perturb.layers == "first"
    assert every.perturb.eps == first.perturb.eps == 0.02
    assert every.train.epochs == 40 and every.train.batch_size == 50 and every.seed == 1
    assert every.optim.name == "summed_momentum" and every.optim.lr == 1e-3 and every.optim.momentum == 0.9


@pytest.mark.parametrize("override,message", [
    ("perturb.eps=-0.1", "perturb.eps=-0.1 is not allowed: must be a number >= 0"),
    ("perturb.pieces=0", "perturb.pieces=0 is not allowed: must be an integer >= 1"),
    ("perturb.pieces=1.5", "perturb.pieces=1.5 is not allowed"),
    ("loss.name=hinge", "loss.name='hinge' is not allowed: choose one of mse, ce, logistic"),
    ("train.log_every=2", "train.checkpoint_every=1 is not allowed: must be a multiple of train.log_every=2"),
    ("perturb.layers=middle", "perturb.layers='middle' is not allowed: choose one of none, all, first"),
    ("model.name=resnet", "model.name='resnet' is not allowed: choose one of linear, mlp, pe_net"),
    ("data.name=imagenet", "data.name='imagenet' is not allowed: choose one of cifar10, cifar2, diagonal7"),
    ("optim.lr=0", "optim.lr=0 is not allowed: must be a number > 0"),
    ("optim.momentum=1.0", "optim.momentum=1.0 is not allowed"),
    ("train.epochs=0", "train.epochs=0 is not allowed"),
    ("device=tpu", "device='tpu' is not allowed: choose one of auto, cpu, cuda"),
    ("loss=ce", None),  # valid: the model follows the loss's number of outputs
    ("model.outputs=3", "model.outputs=3 is not allowed with loss mse: must be 1"),
    ("model.size=0", "model.size=0 is not allowed: must be an integer >= 1"),
    ("model.negative_slope=abc", "model.negative_slope='abc' is not allowed: must be a number >= 0"),
    ("data.classes=[0,12]", "data.classes=[0, 12] is not allowed: must be a list of 2 distinct integers >= 0 and <= 9"),
    ("data.classes=[3,3]", "data.classes=[3, 3] is not allowed"),
    ("perturb.eps=[0.01,abc]", "perturb.eps=[0.01, 'abc'] is not allowed: must be a number >= 0"),
    ("perturb.eps=0.01", "perturb.eps=0.01 is not allowed with perturb.layers=none (nothing would be perturbed)"),
    ("init.layers=[conv9]", "init.layers entry 'conv9' is not allowed for model pe_net: choose from all, first, conv1"),
])
def test_invalid_values_are_named_with_what_is_allowed(override, message):
    if message is None:
        validate_training(compose_with([override]))
        return
    with pytest.raises(ConfigError) as error:
        validate_training(compose_with([override]))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("overrides,message", [
    (["model=richness_cnn", "model.widths=[6,0,120,84]"],
     "model.widths=[6, 0, 120, 84] is not allowed: must be a list of 4 integers >= 1"),
    (["model=mlp", "model.widths=[]"], "model.widths=[] is not allowed: must be a non-empty list of integers >= 1"),
    (["data=synthetic_cifar2", "data.rank=0"], "data.rank=0 is not allowed: must be an integer >= 1 and <= 3072"),
    (["model=linear", "init.layers=[fc2]"], "init.layers entry 'fc2' is not allowed for model linear: choose from "
                                            "all, first, fc1"),
])
def test_invalid_model_and_data_values(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate_training(compose_with(overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("option", sorted(path.stem for path in (Path(CONF_DIR) / "model").glob("*.yaml")))
def test_layer_names_of_the_check_are_the_models(option):
    cfg = compose_with([f"model={option}"])
    shape = (2,) if option in ("linear", "mlp", "toy_mlp") else (3, 32, 32)
    assert layer_names(cfg.model) == build_model(cfg.model, shape).layer_names


def test_ts_experiments_follow_the_paper():
    for name, data, d_in in (("ts_cifar10", "cifar10", 3072), ("ts_mnist", "mnist", 784)):
        cfg = compose_with([f"experiment={name}"])
        assert cfg.data.name == data and cfg.model.name == "mlp" and list(cfg.model.widths) == [100] * 4
        assert cfg.model.outputs == 10 and cfg.loss.name == "ce" and cfg.train.keep_states is True
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.05, 0.0, 5e-4)
        assert cfg.train.batch_size == 64 and cfg.train.epochs == 50
        stand_in = compose_with([f"experiment={name}", f"data=synthetic_{data}", "data.n_train=10", "data.n_test=5"])
        model = build_model(stand_in.model, load_dataset(stand_in.data).input_shape)
        assert model.blocks[0].affine.in_features == d_in


@pytest.mark.parametrize("override,message", [
    ("eval.n_train=1", "eval.n_train=1 is not allowed: must be an integer >= 2"),
    ("eval.depth=1", "eval.depth=1 is not allowed"),
])
def test_invalid_tangent_eval_values(override, message):
    cfg = compose_with(["eval=tangent", override])
    with pytest.raises(ConfigError) as error:
        validate_eval(cfg)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("override,message", [
    ("model.dropout=1.0", "model.dropout=1.0 is not allowed: must be a number >= 0 and < 1"),
    ("model.batch_norm=2", "model.batch_norm=2 is not allowed: must be true or false"),
    ("train.keep_states=yes", "train.keep_states='yes' is not allowed: must be true or false"),
    ("loss.outputs=1", "model.outputs=1 is not allowed with loss ce: must be an integer >= 2"),
])
def test_invalid_ts_training_values(override, message):
    cfg = compose_with(["experiment=ts_cifar10", override])
    with pytest.raises(ConfigError) as error:
        validate_training(cfg)
    assert message in str(error.value)


@pytest.mark.parametrize("override,message", [
    ("eval.depths=[0,1]", "eval.depths=[0, 1] is not allowed"),
    ("eval.sigmas=[0.0]", "eval.sigmas=[0.0] is not allowed"),
    ("eval.w_max=-1", "eval.w_max=-1 is not allowed"),
])
def test_invalid_bound_values(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_eval(compose_with(["eval=bound", override]))


def test_invalid_eval_values():
    cfg = compose_with(["eval.resolution=0.5"])
    with pytest.raises(ConfigError, match=r"eval.resolution=0.5 is not allowed: must be a number > 0 and <= 0.3"):
        validate_eval(cfg)
    with pytest.raises(ConfigError, match=r"^eval.seed=-1 is not allowed: must be an integer >= 0$"):
        validate_eval(compose_with(["eval.seed=-1"]))
    with pytest.raises(ConfigError, match=r"^eval.random_start='maybe' is not allowed: must be true or false$"):
        validate_eval(compose_with(["eval.random_start=maybe"]))


@pytest.mark.parametrize("evaluator,override,message", [
    ("margin", "eval.apgd=maybe", "eval.apgd='maybe' is not allowed: must be true or false"),
    ("margin", "eval.apgd=1", "eval.apgd=1 is not allowed: must be true or false"),
    ("margin", "eval.apgd_steps=0", "eval.apgd_steps=0 is not allowed: must be an integer >= 1"),
    ("margin", "eval.apgd_restarts=1.5", "eval.apgd_restarts=1.5 is not allowed: must be an integer >= 1"),
    ("boundary", "eval.apgd=null", "eval.apgd=None is not allowed: must be true or false"),
])
def test_invalid_apgd_stage_values(evaluator, override, message):
    with pytest.raises(ConfigError) as error:
        validate_eval(compose_with([f"eval={evaluator}", override]))
    assert str(error.value) == message


def test_the_apgd_stage_is_on_by_default_and_off_in_the_authors_protocol():
    validate_eval(compose_with(["eval=margin"]))
    assert compose_with(["eval=margin"]).eval.apgd is True
    assert compose_with(["eval=margin_authors"]).eval.apgd is False


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_bad_value_is_one_line_and_exit_2(tmp_path):
    result = run_cli("pexp.train", "perturb.eps=-1", f"paths.output_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: perturb.eps=-1 is not allowed: must be a number >= 0"
    assert not (tmp_path / "runs").exists()  # nothing was started


@pytest.mark.slow
def test_cli_unknown_group_option_names_it_and_the_choices(tmp_path):
    result = run_cli("pexp.train", "model=resnet", f"paths.output_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: model=resnet is not allowed: choose one of linear, mlp, pe_net, "
                                     "richness_cnn, toy_mlp")


@pytest.mark.slow
def test_cli_unknown_figure_id(tmp_path):
    result = run_cli("pexp.figures", "fig=fig99", f"paths.output_dir={tmp_path}")
    assert result.returncode == 2
    assert "fig='fig99' is not allowed: choose one of richness-fig2" in result.stderr


@pytest.mark.slow
def test_cli_multirun_is_validated_before_any_job_starts(tmp_path):
    result = run_cli("pexp.train", "-m", "experiment=pe_alg1", "perturb.eps=0.005,abc", "seed=1,2",
                     f"paths.output_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: perturb.eps='abc' is not allowed: must be a number >= 0 (sweep job: experiment=pe_alg1 "
        f"perturb.eps=abc seed=1 paths.output_dir={tmp_path})"]
    assert not (tmp_path / "runs").exists()  # not even the valid jobs started
