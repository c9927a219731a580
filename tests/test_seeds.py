"""Seeds and bands on the CIFAR margin figures: several seeds per run, mean curve with a min-max band, claims
judged per seed and on the mean."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from pexp.config import ConfigError
from pexp.figures import FIGURES
from pexp.figures.base import make_figure, multirun_commands, requested_seeds
from pexp.figures.compose import figure_command

from conftest import ROOT, assert_judged


@pytest.mark.slow
def test_two_seeds_draw_a_band_judge_each_seed_and_reuse_the_runs(tiny, tmp_path, capsys, monkeypatch):
    import pexp.figures.margins as margins

    bands = []
    original = margins.plt.Axes.fill_between
    monkeypatch.setattr(margins.plt.Axes, "fill_between",
                        lambda self, *args, **kwargs: bands.append(args) or original(self, *args, **kwargs))
    overrides = [*tiny, "seeds=[1,2]"]
    paths = make_figure(FIGURES["pe-fig4"], overrides, tmp_path / "f", progress=False)
    table = pd.read_csv(paths["csv"])
    assert set(table["seed"]) == {1, 2} and set(table["run"]) == {"cross-entropy", "squared error"}
    assert len({run for run in table["run_dir"]}) == 4  # two runs x two seeds, each its own training
    assert len(bands) == 2 * 2 * 2  # two panels x two rows x (train, test)
    low, high = bands[0][1], bands[0][2]
    assert (low <= high).all() and (low < high).any()  # the seeds differ somewhere: a real band
    claims = assert_judged(json.loads(paths["claims.json"].read_text()))
    texts = [item["claim"] for item in claims]
    pooled = [item for item in claims if item["claim"].startswith("mean of 2 seeds: ")]
    assert len(pooled) == len(claims) // 3 and sum(t.startswith("seed 1: ") for t in texts) == len(pooled)
    first = pooled[0]["measured"]
    assert set(first["holds_per_seed"]) == {"1", "2"}
    lo, hi = first["spread"]["test.median"]
    seed_medians = sorted(item["measured"]["test"]["median"] for item in claims
                          if item["claim"].startswith("seed ") and "cross-entropy" in item["claim"])
    assert [lo, hi] == seed_medians
    meta = json.loads(paths["meta.json"].read_text())
    assert len(meta["runs"]) == 4
    capsys.readouterr()
    make_figure(FIGURES["pe-fig4"], overrides, tmp_path / "f", progress=False)
    assert capsys.readouterr().out.count("reusing finished run") == 4


def test_seeds_are_checked_before_any_work():
    with pytest.raises(ConfigError, match=r"seeds=\[1,1\] is not allowed"):
        requested_seeds(FIGURES["pe-fig5"], ["seeds=[1,1]"])
    with pytest.raises(ConfigError, match="only .*richness-fig2"):
        requested_seeds(FIGURES["pe-fig1"], ["seeds=[1,2]"])
    assert requested_seeds(FIGURES["pe-fig5"], ["seeds=[1,2,3]"]) == [1, 2, 3]
    assert requested_seeds(FIGURES["pe-fig5"], []) is None


def test_seeds_are_the_composed_configs():
    """The seeds are read from the root config the command line composes, not from its text."""
    cfg = figure_command(["fig=pe-fig5", "seeds=[3,1]"]).cfg
    assert list(cfg.seeds) == [3, 1]
    assert requested_seeds(FIGURES["pe-fig5"], figure_command([], cfg)) == [3, 1]
    assert requested_seeds(FIGURES["pe-fig5"], figure_command(["seeds=[2]"], cfg)) == [3, 1]


@pytest.mark.slow
def test_seed_multiruns_train_every_run_the_figure_then_reuses(tiny, one_thread, capsys, tmp_path):
    """One multirun over the three experiments and the seeds; it trains exactly the runs the figure looks for."""
    overrides = [*tiny, "seeds=[1,2]"]
    commands = multirun_commands(FIGURES["richness-fig2"], [1, 2], overrides, jobs=1)
    assert len(commands) == 1
    command = commands[0]
    assert "experiment=richness_fig2_first,richness_fig2_all,pe_fig4_se" in command and "seed=1,2" in command
    assert "-m" in command and "hydra/launcher=joblib" in command
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    capsys.readouterr()
    make_figure(FIGURES["richness-fig2"], overrides, tmp_path / "f", progress=False)
    assert capsys.readouterr().out.count("reusing finished run") == 6  # three runs x two seeds, none trained again


@pytest.mark.slow
def test_command_line_seeds_error_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pexp.figures", "fig=pe-fig1", "seeds=[1,2]",
                             f"paths.output_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "seeds=" in result.stderr


def test_runs_of_one_experiment_that_differ_in_one_value_are_one_multirun(tiny):
    commands = multirun_commands(FIGURES["pe-fig5"], [1, 2], [*tiny, "seeds=[1,2]"], jobs=2)
    assert len(commands) == 2  # Algorithm 1's three radii, and the unperturbed pe-fig4 (b) network
    command, unperturbed = sorted(commands, key=lambda c: "experiment=pe_fig4_se" in c)
    assert "experiment=pe_alg1" in command and "experiment=pe_fig4_se" in unperturbed and "seed=1,2" in unperturbed
    assert "seed=1,2" in command and "perturb.eps=0.005,0.01,0.02" in command
    assert command.index("seed=1,2") < command.index("perturb.eps=0.005,0.01,0.02")  # seed 1's runs first
