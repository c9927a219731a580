"""Train -> evaluate -> figure on a tiny synthetic config; reuse and resume of runs."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import pexp.train.loop as loop
from pexp.figures import FIGURES
from pexp.figures.base import make_figure, write_figure
from pexp.figures.compose import compose_experiment
from pexp.runs import training_run_dir
from pexp.train.loop import train

from conftest import ROOT, assert_judged


@pytest.mark.slow
def test_figure_writes_four_files_and_reuses_runs(tiny, tmp_path, capsys):
    figures_dir = tmp_path / "figures"
    paths = make_figure(FIGURES["richness-fig2"], tiny, figures_dir, progress=False)
    assert sorted(p.name for p in figures_dir.iterdir()) == sorted(
        f"richness-fig2.{ext}" for ext in ("csv", "claims.json", "png", "pdf", "meta.json"))
    claims = assert_judged(json.loads(paths["claims.json"].read_text()))
    assert len(claims) == 4  # input only, all layers, against the unperturbed net, the FMN cross-check
    for item in claims:
        assert {"claim", "measured", "expected", "holds", "data"} <= set(item) <= {
            "claim", "measured", "expected", "holds", "data", "judged", "diagnostic", "diagnosis"}
        assert item["data"] == "synthetic" and isinstance(item["holds"], bool)
    meta = json.loads(paths["meta.json"].read_text())
    assert (meta["id"], meta["paper"], meta["overrides"], meta["data"]) == ("richness-fig2", "R", tiny, ["synthetic"])
    assert [(run["label"], run["experiment"]) for run in meta["runs"]] == [("first", "richness_fig2_first"),
                                                                           ("all", "richness_fig2_all"),
                                                                           ("unperturbed", "pe_fig4_se")]
    for run in meta["runs"]:
        assert run["run_dir"].endswith("/" + run["hash"]) and (Path(run["run_dir"]) / "COMPLETE").exists()
        assert run["train_seconds"] > 0
    assert meta["seconds"] > 0 and meta["train_seconds"] == sum(run["train_seconds"] for run in meta["runs"])
    assert meta["created_utc"].endswith("Z")
    table = pd.read_csv(paths["csv"])
    assert set(table["run"]) == {"first", "all", "unperturbed"} and set(table["split"]) == {"train", "test"}
    assert len(table) == 3 * (20 + 20) and (table["margin"] >= 0).all()
    model_file = training_run_dir(compose_experiment("richness_fig2_all", tiny)) / "model.pt"
    stamp = model_file.stat().st_mtime_ns
    capsys.readouterr()
    make_figure(FIGURES["richness-fig2"], tiny, figures_dir, progress=False)
    assert "reusing finished run" in capsys.readouterr().out
    assert model_file.stat().st_mtime_ns == stamp  # not trained again


def without_accuracies(measured):
    if not isinstance(measured, dict):
        return measured
    return {key: without_accuracies(value) for key, value in measured.items() if "accuracy" not in key}


@pytest.mark.slow
def test_figure_is_redrawn_from_its_csv_alone(tiny, tmp_path):
    paths = make_figure(FIGURES["richness-fig2"], tiny, tmp_path / "a", progress=False)
    table = pd.read_csv(paths["csv"])
    metrics = {label: {} for label in ("first", "all", "unperturbed")}
    again = write_figure(FIGURES["richness-fig2"], table, metrics, tmp_path / "b")
    first = json.loads(paths["claims.json"].read_text())
    second = json.loads(again["claims.json"].read_text())
    for before, after in zip(first, second):  # metrics.json numbers (accuracies) are not in the CSV
        assert without_accuracies(before["measured"]) == without_accuracies(after["measured"])
        assert before["holds"] == after["holds"]
    assert len(first) == len(second) == 4 and again["png"].stat().st_size > 10_000
    figure = FIGURES["richness-fig2"].plot(table)
    assert figure._suptitle.get_text().startswith("richness-fig2") and "SYNTHETIC" in figure._suptitle.get_text()
    assert [ax.get_title() for ax in figure.axes][:2] == ["(a) perturbation at the input only",
                                                          "(b) perturbation at every layer"]


def test_interrupted_run_resumes_to_the_same_weights(tiny, tmp_path, monkeypatch):
    cfg_a = compose_experiment("richness_fig2_all", [*tiny, "train.epochs=3"])
    reference = torch.load(train(cfg_a) / "model.pt")["state_dict"]

    cfg_b = compose_experiment("richness_fig2_all", [*tiny, "train.epochs=3", f"paths.output_dir={tmp_path}/b"])
    real_step, calls = loop.training_step, []
    per_epoch = 120 // 20

    def dying_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == per_epoch * 2 + 1:  # during epoch 3, after two checkpoints
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_b)
    run = training_run_dir(cfg_b)
    assert not run.complete and torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 2
    monkeypatch.setattr(loop, "training_step", real_step)
    resumed = torch.load(train(cfg_b) / "model.pt")["state_dict"]
    for name, value in reference.items():
        torch.testing.assert_close(resumed[name], value, atol=0, rtol=0)
    log = pd.read_csv(run / "train_log.csv")
    assert log["epoch"].tolist() == [1, 2, 3]


@pytest.mark.slow
def test_cli_end_to_end_train_evaluate_figure(tiny, tmp_path):
    def cli(*args):
        result = subprocess.run([sys.executable, "-m", *args, *tiny], cwd=ROOT, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    run_dir = cli("pexp.train", "experiment=richness_fig2_first").strip().splitlines()[-1]
    assert (tmp_path / "outputs" / "runs" / "alg1_first").is_dir() and run_dir.endswith(
        training_run_dir(compose_experiment("richness_fig2_first", tiny)).path.name)
    out = cli("pexp.evaluate", "eval=margin", f"run={run_dir}")
    assert "results.csv (40 rows)" in out
    out = cli("pexp.figures", "fig=richness-fig2")
    assert "richness-fig2.png" in out
    assert (tmp_path / "outputs" / "figures" / "richness-fig2.pdf").exists()
