"""Every entry point checks the whole composed config before any work: a bad value, an unknown group option or
experiment, a key the config lacks, a run that does not exist, each get one line and exit status 2."""
import subprocess
import sys

import pytest

import pexp.cli
import pexp.evaluate as evaluate_main
import pexp.figures.__main__ as figures_main
import pexp.train.__main__ as train_main
from pexp.cli import preflight

from conftest import ROOT

CHECKS = {"pexp.train": train_main.check_job, "pexp.evaluate": evaluate_main.check_job,
          "pexp.figures": figures_main.check_job}
EXPERIMENTS = "choose one of om_fig1_cifar10, om_fig1_mnist, om_fig2_a"


def run_cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("module,args,line", [
    ("pexp.evaluate", ["eval=margin", "run=richness_fig2_all", "data=synthetic_cifar2", "eval.eps_max=-1"],
     "error: eval.eps_max=-1 is not allowed: must be a number > 0"),
    ("pexp.train", ["experiment=richness_fig2_all", "model=resnet"],
     "error: model=resnet is not allowed: choose one of linear, mlp, pe_net, richness_cnn, toy_mlp"),
    ("pexp.train", ["experiment=nonexistent"], f"error: experiment=nonexistent is not allowed: {EXPERIMENTS}"),
    ("pexp.evaluate", ["eval=margin", "run=no/such/run-dir"],
     "error: run=no/such/run-dir does not exist: give a finished run's directory (python -m pexp.runs lists them) "
     "or an experiment name"),
    ("pexp.figures", ["-m", "fig=pe-fig1", "train.epochs=10,0"],
     "error: train.epochs=0 is not allowed: must be an integer >= 1 (in pe-fig1's run ce/seed1) (sweep job: "
     "fig=pe-fig1 train.epochs=0"),
])
@pytest.mark.slow
def test_the_issue_cases_are_one_line_exit_2_before_any_work(tmp_path, module, args, line):
    out = tmp_path / "outputs"
    result = run_cli(module, *args, f"paths.output_dir={out}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(line), result.stderr
    assert not out.exists() or not any(out.iterdir())  # nothing trained, evaluated or logged


@pytest.mark.parametrize("module,args,line", [
    # values pexp does not allow, in every part of the config
    ("pexp.train", ["eval.eps_max=-1"], "eval.eps_max=-1 is not allowed: must be a number > 0"),
    ("pexp.train", ["perturb.eps=-1"], "perturb.eps=-1 is not allowed: must be a number >= 0"),
    ("pexp.evaluate", ["eval=boundary", "run=pe_fig1_ce", "eval.grid=1"], "eval.grid=1 is not allowed: must be an integer >= 2"),
    ("pexp.evaluate", ["eval=bound", "run=pe_fig1_ce"], "eval=bound is not allowed here: pexp.evaluate runs an "
                                                         "evaluator of a trained model, choose one of margin,"),
    ("pexp.evaluate", ["run=nope"], "run='nope' is not allowed: no run directory nor experiment has that name; "
                                    "experiments: om_fig1_cifar10,"),
    ("pexp.figures", ["fig=fig99"], "fig='fig99' is not allowed: choose one of richness-fig2, pe-fig6,"),
    ("pexp.figures", ["fig=pe-fig1", "init.layers=[fc9]"],
     "init.layers entry 'fc9' is not allowed for model mlp: choose from all, first, fc1, fc2 (in pe-fig1's run "
     "ce/seed1)"),
    ("pexp.figures", ["fig=offmanifold-fig1", "data.n_train=0"],
     "data.n_train=0 is not allowed: must be an integer >= 1 or null (in offmanifold-fig1's run cifar10)"),
    ("pexp.figures", ["fig=tangent-fig2", "++eval.sigmas=[0]"], "eval.sigmas=[0] is not allowed"),
    # Hydra's composition errors
    ("pexp.evaluate", ["eval=nope"], "eval=nope is not allowed: choose one of active, bound, boundary,"),
    ("pexp.train", ["foo=1"], "foo=1 is not allowed: the config has no key 'foo' (its keys: data, model, loss,"),
    ("pexp.train", ["model.sizee=3"], "model.sizee=3 is not allowed: model (pe_net) has no key 'sizee' (its keys: "
                                      "name, size, outputs, negative_slope; ++model.sizee=3 adds it)"),
    ("pexp.figures", ["fig=pe-fig1", "eval.grid=3"], "eval.grid=3 is not allowed: eval (margin) has no key 'grid'"),
    ("pexp.evaluate", ["run=om_fig3_a", "eval=margin"],
     "experiment=om_fig3_a is not allowed with eval=margin: it sets eval.view, which that option's schema "
     "(MarginConfig) does not have; choose the experiment's own eval option or another experiment"),
    ("pexp.train", ["perturb.eps=[0.01"], "the override 'perturb.eps=[0.01' cannot be read: no viable alternative"),
    ("pexp.train", ["+seed=3"], "Could not append to config. An item is already at 'seed'."),
    ("pexp.train", ["perturb.eps=0.01,0.02"], "Ambiguous value for argument 'perturb.eps=0.01,0.02'"),
    ("pexp.train", ["-m", "hydra/launcher=nope"], "hydra/launcher=nope is not allowed: choose one of basic, joblib, "
                                                  "submitit_local, submitit_slurm (sweep job: hydra/launcher=nope)"),
    # multiruns: each job, named
    ("pexp.evaluate", ["-m", "eval=margin,boundary", "run=pe_fig1_ce", "eval.steps=0"],
     "eval.steps=0 is not allowed: must be an integer >= 1 (sweep job: eval=margin run=pe_fig1_ce eval.steps=0)"),
    ("pexp.figures", ["-m", "fig=pe-fig1,nope"], "fig='nope' is not allowed: choose one of richness-fig2"),
    ("pexp.train", ["-m", "experiment=pe_alg1,nope"], f"experiment=nope is not allowed: {EXPERIMENTS}"),
])
def test_bad_inputs_are_one_line_exit_2(capsys, module, args, line):
    with pytest.raises(SystemExit) as stop:
        preflight(args, CHECKS[module])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {line}") and err.count("\n") == 1, err


def test_the_submitit_launchers_without_the_extra_say_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(pexp.cli, "installed", lambda module: False)
    with pytest.raises(SystemExit):
        preflight(["-m", "experiment=pe_fig1_ce", "seed=1,2", "hydra/launcher=submitit_slurm"], train_main.check_job)
    assert capsys.readouterr().err.startswith(
        "error: hydra/launcher=submitit_slurm needs hydra-submitit-launcher, not installed here: pip install -e "
        "'.[slurm]' (or make test SLURM=1) (sweep job: experiment=pe_fig1_ce seed=1 hydra/launcher=submitit_slurm)")


def test_the_slurm_launcher_without_sbatch_says_where_to_run(monkeypatch, capsys):
    monkeypatch.setattr(pexp.cli, "installed", lambda module: True)
    monkeypatch.setattr(pexp.cli.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit):
        preflight(["-m", "experiment=pe_fig1_ce", "hydra/launcher=submitit_slurm"], train_main.check_job)
    assert capsys.readouterr().err.startswith(
        "error: hydra/launcher=submitit_slurm needs SLURM's sbatch, not found here: run the command on the cluster's "
        "login node (or hydra/launcher=submitit_local to run the jobs here) (sweep job: ")


def test_an_unfinished_run_directory_is_named(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit):
        preflight([f"run={tmp_path / 'run'}"], evaluate_main.check_job)
    assert f"run={tmp_path / 'run'} is not a finished training run" in capsys.readouterr().err


@pytest.mark.parametrize("module,args", [
    ("pexp.train", ["experiment=pe_fig1_ce", "seed=3"]),
    ("pexp.train", ["-m", "experiment=pe_alg1", "perturb.eps=0.005,0.01", "hydra/launcher=joblib",
                    "hydra.launcher.n_jobs=2"]),
    ("pexp.evaluate", ["eval=boundary", "run=pe_fig1_ce", "eval.grid=50"]),
    ("pexp.figures", ["fig=pe-fig1", "++eval.grid=50", "train.epochs=10"]),
    ("pexp.figures", ["fig=tangent-fig2", "++eval.sigmas=[1.0]"]),
    ("pexp.train", ["--cfg", "job", "foo=1"]),  # Hydra's own flags: left to Hydra
])
def test_good_inputs_pass(capsys, module, args):
    preflight(args, CHECKS[module])
    assert capsys.readouterr().err == ""
