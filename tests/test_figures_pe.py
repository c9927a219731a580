"""Papers R and PE beyond the headline: toy claims on shortened runs, the eps multirun, launchers, PCA."""
import json
import os
import subprocess
import sys

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pexp import CONF_DIR
import pexp.eval.evaluators.pca as evaluate_module
from pexp.data import Dataset, Split
from pexp.eval.evaluators.pca import pca_results
from pexp.figures import FIGURES
from pexp.figures.base import make_figure
from pexp.figures.pca import components_needed
from pexp.models import build_model

from conftest import ROOT

SHORT = ["train.epochs=3000", "train.log_every=1000", "train.checkpoint_every=1000", "train.progress=false"]


def test_pe_fig1_and_pe_fig2_claims_hold_on_shortened_runs(tmp_path):
    overrides = [*SHORT, f"paths.output_dir={tmp_path}"]
    fig1 = json.loads(make_figure(FIGURES["pe-fig1"], overrides, tmp_path / "f", progress=False)
                      ["claims.json"].read_text())
    assert len(fig1) == 6 and all(item["data"] == "toy" for item in fig1)
    assert any(item["holds"] for item in fig1)
    fig2 = json.loads(make_figure(FIGURES["pe-fig2"], overrides, tmp_path / "f", progress=False)
                      ["claims.json"].read_text())
    assert len(fig2) == 2 and any(item["holds"] for item in fig2)
    table = pd.read_csv(tmp_path / "f" / "pe-fig2.csv")
    assert {"point", "boundary"} <= set(table["kind"]) and set(table["dataset"]) == {1, 2}


def test_linear_boundary_margin_is_exact(tmp_path):
    """pe-fig2's margins come from the trained weights: they equal the distance to the drawn boundary."""
    make_figure(FIGURES["pe-fig2"], [*SHORT, f"paths.output_dir={tmp_path}"], tmp_path / "f", progress=False)
    table = pd.read_csv(tmp_path / "f" / "pe-fig2.csv")
    for dataset in (1, 2):
        rows = table[table["dataset"] == dataset]
        points = rows[rows["kind"] == "point"][["x0", "x1"]].to_numpy()
        boundary = rows[rows["kind"] == "boundary"][["x0", "x1"]].to_numpy()
        # the boundary is traced on a grid: its nearest vertex is at least the exact distance away
        nearest = ((points[:, None, :] - boundary[None, :, :]) ** 2).sum(-1).min(1) ** 0.5
        margins = rows[rows["kind"] == "point"]["margin"].to_numpy()
        assert (nearest >= margins - 1e-6).all()
        span = rows[rows["kind"] == "boundary"]["x1"].max() - rows[rows["kind"] == "boundary"]["x1"].min()
        assert nearest.min() <= margins.min() + span / 50


def test_eps_multirun_composes_and_the_figure_finds_its_runs(tmp_path, tiny, capsys):
    result = subprocess.run(
        [sys.executable, "-m", "pexp.train", "-m", "experiment=pe_alg1", "perturb.eps=0.005,0.01,0.02",
         "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *tiny],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((tmp_path / "outputs" / "runs" / "alg1_all").iterdir())) == 3
    capsys.readouterr()
    paths = make_figure(FIGURES["pe-fig5"], tiny, tmp_path / "f", progress=False)
    assert capsys.readouterr().out.count("reusing finished run") == 3  # found by config, not trained again
    claims = json.loads(paths["claims.json"].read_text())
    assert [c["claim"] for c in claims][0] == "train margins grow with eps"
    assert any(c["claim"].startswith("a small persistently-exciting perturbation") for c in claims)
    assert set(pd.read_csv(paths["csv"])["eps"]) == {0.0, 0.005, 0.01, 0.02}  # with pe-fig4 (b)'s network


def test_launcher_configs_compose():
    for launcher in ("joblib", "submitit_slurm"):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
        assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")
    assert "SlurmLauncher" in cfg.hydra.launcher._target_


def test_pca_evaluator_reaches_one_at_the_rank_of_the_activations(monkeypatch):
    """A hidden layer that passes rank-r inputs through linearly: its activations' spectrum ends at component r."""
    torch.manual_seed(0)
    rank, n = 3, 200
    x = torch.randn(n, rank) @ torch.randn(rank, 6)
    mlp = build_model(OmegaConf.create(dict(name="mlp", widths=[10], outputs=1)), (6,))
    with torch.no_grad():  # identity on the 6 inputs plus a large bias, so the ReLU never clips
        mlp.blocks[0].affine.weight.zero_()
        mlp.blocks[0].affine.weight[:6, :6] = torch.eye(6)
        mlp.blocks[0].affine.bias.fill_(100.0)
    split = Split(x, torch.zeros(n, dtype=torch.long))
    monkeypatch.setattr(evaluate_module, "load_dataset", lambda _: Dataset(split, split, "synthetic"))
    table = pca_results(mlp, OmegaConf.create({"data": {}}), OmegaConf.create(dict(n_train=None, batch_size=64,
                                                                                     seed=0)), None, False)
    curve = table[table["layer"] == 1]
    assert components_needed(curve, 1.0 - 1e-9) == rank
    assert curve["cumulative"].iloc[rank - 2] < 0.999
