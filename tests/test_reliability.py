"""Faults injected for real: SIGKILL during training, evaluation and figure writing; corrupted checkpoints and
models; two processes asking for one run; an unwritable output folder and a full disk."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import torch

import pexp.runs
from pexp.config import check_output_dir, exit_on_user_error
from pexp.eval.evaluate import eval_dir, evaluate
from pexp.figures import FIGURES
from pexp.figures.base import make_figure
from pexp.figures.compose import compose_experiment
from pexp.runs import COMPLETE, training_run_dir
from pexp.train.loop import train

from conftest import ROOT

# A toy run of pe-fig1 (16 points, 2-20-1 net): about a millisecond per epoch, a checkpoint every 100 epochs.
TOY = ["train.epochs=2000", "train.log_every=100", "train.checkpoint_every=100", "train.progress=false"]


pytestmark = pytest.mark.usefixtures("one_thread")


def toy(folder: Path) -> list[str]:
    return [*TOY, f"paths.output_dir={folder}"]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(process: subprocess.Popen, ready, timeout: float = 240) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` holds (polled); fail if it ended first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"ended before the fault could be injected: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting to inject the fault"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "it finished before the kill landed"


def assert_same_run(a: pexp.runs.RunDir, b: pexp.runs.RunDir) -> None:
    """Bit-identical final weights, the same metrics (but timings) and the same training log (but timings)."""
    weights_a, weights_b = (torch.load(run / "model.pt")["state_dict"] for run in (a, b))
    for name, value in weights_a.items():
        torch.testing.assert_close(weights_b[name], value, atol=0, rtol=0)
    metrics_a, metrics_b = (json.loads((run / "metrics.json").read_text()) for run in (a, b))
    for metrics in (metrics_a, metrics_b):
        metrics.pop("seconds_per_epoch")
    assert metrics_a == metrics_b
    logs = [pd.read_csv(run / "train_log.csv").drop(columns="seconds") for run in (a, b)]
    pd.testing.assert_frame_equal(*logs)


def no_temporaries(folder: Path) -> bool:
    return not list(folder.glob(".*.tmp*"))


@pytest.mark.slow
def test_sigkill_during_training_then_rerun_gives_the_uninterrupted_numbers(tmp_path, capsys):
    reference = train(compose_experiment("pe_fig1_ce", toy(tmp_path / "reference")))
    overrides = toy(tmp_path / "killed")
    run = training_run_dir(compose_experiment("pe_fig1_ce", overrides))
    process = start("pexp.train", "experiment=pe_fig1_ce", *overrides)
    kill_when(process, lambda: (run / "checkpoint.pt").exists())
    assert not run.complete and not (run / "model.pt").exists() and not (run / "metrics.json").exists()
    epoch = torch.load(run / "checkpoint.pt", weights_only=False)["epoch"]  # never a partial checkpoint
    assert 100 <= epoch < 2000
    capsys.readouterr()
    resumed = train(compose_experiment("pe_fig1_ce", overrides))  # the same command again
    assert f"resuming {run.path} at epoch" in capsys.readouterr().out
    assert_same_run(reference, resumed)
    assert no_temporaries(run.path)


def test_corrupted_checkpoint_and_model_are_detected_and_redone(tmp_path):
    reference = train(compose_experiment("pe_fig1_ce", toy(tmp_path / "reference")))
    cfg = compose_experiment("pe_fig1_ce", toy(tmp_path / "damaged"))
    run = train(cfg)
    # a finished run whose model.pt was truncated: redone from its last (final) checkpoint
    model = (run / "model.pt").read_bytes()
    (run / "model.pt").write_bytes(model[: len(model) // 2])
    with pytest.warns(UserWarning, match="model.pt is unreadable; redoing it"):
        train(cfg)
    assert run.complete
    assert_same_run(reference, run)
    # an unfinished run with a truncated checkpoint: trained again from scratch, same numbers
    run.mark_incomplete()
    (run / "model.pt").unlink()
    checkpoint = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(checkpoint[:100])
    with pytest.warns(UserWarning, match="checkpoint .* is unreadable"):
        train(cfg)
    assert_same_run(reference, run)


@pytest.mark.slow
def test_two_processes_asking_for_one_run_train_it_once(tmp_path):
    overrides = toy(tmp_path / "outputs")
    first, second = (start("pexp.train", "experiment=pe_fig1_ce", *overrides) for _ in range(2))
    outputs = [process.communicate(timeout=300) for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    run = training_run_dir(compose_experiment("pe_fig1_ce", overrides))
    assert [out.strip().splitlines()[-1] for out, _ in outputs] == [str(run.path)] * 2
    assert sum("[pexp] finished" in out for out, _ in outputs) == 1  # the other waited on the lock and reused it
    assert pd.read_csv(run / "train_log.csv")["epoch"].tolist() == list(range(100, 2001, 100))


@pytest.mark.slow
def test_sigkill_during_evaluation_is_not_taken_as_finished(tiny, tmp_path):
    slow = [*tiny, "data.n_test=200", "eval.n_test=200", "eval.steps=20", "eval.resolution=0.001"]
    cfg = compose_experiment("richness_fig2_all", slow)
    run = train(cfg)
    untouched = pexp.runs.RunDir(shutil.copytree(run.path, tmp_path / "copy"))  # for the uninterrupted evaluation
    out = eval_dir(run, cfg.eval)
    process = start("pexp.evaluate", "eval=margin", f"run={run.path}", *slow)
    kill_when(process, lambda: (out / "train.csv").exists())  # one split done, the other under way
    assert not out.complete and not (out / "results.csv").exists()
    results = evaluate(run, cfg.eval, "cpu", progress=False)  # the rerun: keeps the train split, does the test one
    assert out.complete and no_temporaries(out.path)
    pd.testing.assert_frame_equal(results, evaluate(untouched, cfg.eval, "cpu", progress=False))


@pytest.mark.slow
def test_sigkill_during_figure_writing_leaves_no_finished_looking_figure(tiny, tmp_path):
    make_figure(FIGURES["richness-fig2"], tiny, tmp_path / "first", progress=False)  # runs and evaluations made
    figures = tmp_path / "outputs" / "figures"
    process = start("pexp.figures", "fig=richness-fig2", *tiny)
    kill_when(process, lambda: (figures / "richness-fig2.claims.json").exists())
    assert not (figures / "richness-fig2.meta.json").exists()  # written last: the set is not finished
    for name in ("richness-fig2.csv", "richness-fig2.claims.json"):
        assert (figures / name).stat().st_size > 0
    json.loads((figures / "richness-fig2.claims.json").read_text())
    if (figures / "richness-fig2.png").exists():  # present only if complete
        assert matplotlib.image.imread(figures / "richness-fig2.png").shape[0] > 100
    paths = make_figure(FIGURES["richness-fig2"], tiny, figures, progress=False)  # the rerun
    assert json.loads(paths["meta.json"].read_text())["id"] == "richness-fig2"
    assert no_temporaries(figures)


def test_full_disk_is_one_line_exit_2_and_the_last_checkpoint_survives(tmp_path, monkeypatch, capsys):
    reference = train(compose_experiment("pe_fig1_ce", toy(tmp_path / "reference")))
    cfg = compose_experiment("pe_fig1_ce", toy(tmp_path / "full"))
    real_save, saves = torch.save, []

    def filling_save(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 4:  # the disk fills up during the fourth checkpoint
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", filling_save)
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(train)(cfg)
    assert stop.value.code == 2
    run = training_run_dir(cfg)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {run / 'checkpoint.pt'}: No space left")
    assert torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 300  # the old one, intact
    assert not run.complete and no_temporaries(run.path)
    monkeypatch.setattr(torch, "save", real_save)
    assert_same_run(reference, train(cfg))  # space freed: resumes and finishes as if nothing happened


def test_unwritable_runs_folder_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    cfg = compose_experiment("pe_fig1_ce", [*toy(tmp_path), f"paths.runs_dir={tmp_path / 'a-file' / 'runs'}"])
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(train)(cfg)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "a-file/runs" in lines[0] and "Not a directory" in lines[0]
    assert (tmp_path / "a-file").read_text() == "not a folder"


@pytest.mark.slow
def test_output_dir_under_a_file_stops_every_entry_point_before_hydra(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    bad = f"paths.output_dir={tmp_path / 'a-file' / 'out'}"
    with pytest.raises(SystemExit) as stop:
        check_output_dir(["fig=pe-fig1", bad])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: {bad} is not a writable folder: Not a directory\n"
    check_output_dir([f"paths.output_dir={tmp_path / 'fine'}"])  # a folder that can be made is fine
    result = subprocess.run([sys.executable, "-m", "pexp.train", "experiment=pe_fig1_ce", bad], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr == f"error: {bad} is not a writable folder: Not a directory\n"


def test_a_stale_temporary_file_of_a_killed_writer_is_removed_under_the_lock(tmp_path):
    run = pexp.runs.RunDir(tmp_path / "run")
    run.path.mkdir()
    (run.path / ".checkpoint.abc123.tmp.pt").write_bytes(b"half")
    (run.path / COMPLETE).write_text("{}")
    with run.lock():
        pass
    assert sorted(p.name for p in run.path.iterdir()) == [".lock", COMPLETE]


def test_a_loss_that_becomes_nan_stops_with_one_line_naming_the_epoch(tmp_path):
    """Numerical fault: lr 1e30 makes the toy's loss NaN within ten epochs; the run stops there, says so in one
    line (exit 2), and is never marked finished."""
    from test_config import run_cli

    result = run_cli("pexp.train", "experiment=om_fig2_a", "optim.lr=1e30", "train.epochs=50", "train.log_every=10",
                     "train.checkpoint_every=10", "train.progress=false", f"paths.output_dir={tmp_path}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "training loss became nan by epoch 10 of run" in lines[0] and "optim.lr" in lines[0]
    assert not list((tmp_path / "runs").glob("*/*/COMPLETE"))
