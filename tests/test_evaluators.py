"""The evaluators of pexp.eval.evaluators: one schema and one function each, registered by their eval.name, and
every conf/eval option extends its evaluator's schema. A new evaluator is one schema and function plus one yaml
(shown with an evaluator of the model's outputs defined here and its yaml in a temporary config directory)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

import pexp.evaluate as evaluate_main
from pexp import CONF_DIR
from pexp.cli import compose_config, preflight
from pexp.config import ConfigError, validate_eval
from pexp.data import load_dataset
from pexp.eval.evaluate import RESULTS, eval_dir, evaluate, find_run
from pexp.eval.evaluators import DATA_EVALUATORS, EVALUATORS, SCHEMAS, register
from pexp.eval.evaluators.common import SplitName
from pexp.runs import COMPLETE
from pexp.schema import SCHEMA_PREFIX, integer
from pexp.train.loop import load_trained


def test_every_eval_option_extends_its_evaluators_schema():
    for path in sorted((Path(CONF_DIR) / "eval").glob("*.yaml")):
        cfg = compose_config([f"eval={path.stem}"])
        assert OmegaConf.get_type(cfg.eval) is SCHEMAS[cfg.eval.name], path.stem
        validate_eval(cfg)
    assert set(EVALUATORS) | set(DATA_EVALUATORS) | {"bound"} == set(SCHEMAS)  # bound: tangent-fig2's table


@pytest.mark.parametrize("overrides,message", [
    (["eval.name=nope"], "eval.name='nope' is not allowed: choose one of margin, boundary, pca, dataset_pca, "
                         "offmanifold, projected, active, tangent, bound"),
    (["eval.name=boundary"], "eval.name='boundary' is not allowed with this eval config: an option of evaluator "
                             "boundary extends its schema (defaults: [base_boundary, _self_])"),
    (["eval=projected", "eval.modes=[subspace,sideways]"],
     "eval.modes=['subspace', 'sideways'] is not allowed: must be a non-empty list of unrestricted, subspace, "
     "complement"),
    (["eval=projected", "eval.modes=[]"], "eval.modes=[] is not allowed"),
    (["eval=projected", "eval.bounds=[1,-1]"], "eval.bounds=[1, -1] is not allowed: must be null (no box) or "
                                               "[low, high] with low < high"),
    (["eval=boundary", "eval.view=[0,1,2]"], "eval.view=[0, 1, 2] is not allowed: must be [x_min, x_max, y_min, "
                                             "y_max] with x_min < x_max and y_min < y_max"),
    (["eval=offmanifold", "eval.tolerance=0"], "eval.tolerance=0 is not allowed: must be a number > 0"),
    (["eval=offmanifold", "++eval.surface_grid=1"], "eval.surface_grid=1 is not allowed: must be an integer >= 2 or "
                                                    "null"),
    (["eval=pca", "eval.n_train=1"], "eval.n_train=1 is not allowed: must be an integer >= 2 or null"),
    (["eval=dataset_pca", "eval.batch_size=0"], "eval.batch_size=0 is not allowed: must be an integer >= 1"),
    (["eval=margin", "eval.protocol=mine"], "eval.protocol='mine' is not allowed: choose one of accurate, authors"),
    (["eval=dataset_pca", "eval.split=val"], "eval.split='val' is not allowed: choose one of train, test"),
    (["eval=bound", "eval.widths=[100,2.5]"], "eval.widths=[100, 2.5] is not allowed: must be a non-empty list of "
                                              "integers >= 1"),
])
def test_each_evaluator_checks_its_own_keys(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate_eval(compose_config(overrides))  # a type or name the schema lacks: already in compose_config
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@dataclass
class OutputsConfig:
    """eval=outputs: the model's outputs on the first n_points of a split."""

    name: str = "outputs"
    split: SplitName = SplitName.train
    n_points: Optional[int] = integer(None, ge=1, null=True)  # null: the whole split
    batch_size: int = integer(256, ge=1)


def outputs_results(model, cfg, eval_cfg, out, progress):  # noqa: ARG001
    """Columns split, index, target and output0..output{k-1}: the model's k outputs per point."""
    split = getattr(load_dataset(cfg.data), str(eval_cfg.split))
    x = split.x[:eval_cfg.n_points]
    with torch.no_grad():
        outputs = torch.cat([model(chunk) for chunk in x.split(int(eval_cfg.batch_size))]).double().numpy()
    return pd.DataFrame(dict(split=str(eval_cfg.split), index=np.arange(len(x)), target=split.y[:len(x)].numpy(),
                             **{f"output{j}": outputs[:, j] for j in range(outputs.shape[1])}))


@pytest.fixture
def outputs_evaluator(tmp_path):
    """The overrides that select eval=outputs: its schema and function registered for this test, its yaml in a
    config directory of its own (nothing else of pexp knows it); all removed afterwards."""
    (tmp_path / "conf" / "eval").mkdir(parents=True)
    (tmp_path / "conf" / "eval" / "outputs.yaml").write_text(
        "# The model's outputs on the first 5 training points.\n"
        "defaults:\n  - base_outputs\n  - _self_\nname: outputs\nsplit: train\nn_points: 5\nbatch_size: 2\n")
    register("outputs", OutputsConfig, outputs_results)
    try:
        yield [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "eval=outputs"]
    finally:
        del SCHEMAS["outputs"], EVALUATORS["outputs"]
        del ConfigStore.instance().repo["eval"][f"{SCHEMA_PREFIX}outputs.yaml"]


def test_a_new_evaluator_is_one_schema_and_function_and_one_yaml(outputs_evaluator, tmp_path, capsys):
    """Its declared fields are checked (one line, exit status 2 from the entry point, before any work), then it
    evaluates a small trained run and writes its results beside it."""
    run_args = ["experiment=om_fig2_a", "train.epochs=20", "train.log_every=10", "train.checkpoint_every=10",
                "train.progress=false", f"paths.output_dir={tmp_path / 'outputs'}", *outputs_evaluator]
    with pytest.raises(ConfigError, match=r"^eval.n_points=0 is not allowed: must be an integer >= 1 or null$"):
        validate_eval(compose_config([*run_args, "eval.n_points=0"]))
    with pytest.raises(ConfigError, match=r"^eval.split='val' is not allowed: choose one of train, test$"):
        compose_config([*run_args, "eval.split=val"])
    with pytest.raises(SystemExit) as stop:
        preflight([*run_args, "eval.batch_size=0"], evaluate_main.check_job)
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: eval.batch_size=0 is not allowed: must be an integer >= 1\n"
    assert not (tmp_path / "outputs").exists()  # nothing trained

    preflight(run_args, evaluate_main.check_job)  # pexp.evaluate accepts it
    cfg = compose_config(run_args)
    assert cfg.eval.n_points == 5 and cfg.eval.split == "train"
    run = find_run(cfg)  # trains the run
    table = evaluate(run, cfg.eval, device="cpu", progress=False)
    out = eval_dir(run, cfg.eval)
    assert out.path.name.startswith("outputs-") and (out / COMPLETE).exists()
    pd.testing.assert_frame_equal(table, pd.read_csv(out / RESULTS))
    assert json.loads((out / "eval.json").read_text()) == dict(name="outputs", split="train", n_points=5,
                                                               batch_size=2)
    model, _ = load_trained(run, torch.device("cpu"))
    data = load_dataset(cfg.data)
    with torch.no_grad():
        expected = model(data.train.x[:5]).double()
    assert list(table["index"]) == [0, 1, 2, 3, 4] and list(table["target"]) == data.train.y[:5].tolist()
    torch.testing.assert_close(torch.tensor(table[[f"output{j}" for j in range(expected.shape[1])]].to_numpy()),
                               expected, rtol=1e-5, atol=1e-6)
