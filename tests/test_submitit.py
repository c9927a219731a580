"""The cluster path for real, on this machine: Hydra's submitit launcher with submitit's local executor (what
``hydra/launcher=submitit_slurm`` does on a cluster, without the cluster). Needs the slurm extra
(``pip install -e '.[slurm]'``; ``make test SLURM=1``, as CI runs it)."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pexp.figures.compose import compose_experiment
from pexp.runs import training_run_dir

from conftest import ROOT

pytestmark = pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                                reason="the slurm extra is not installed (pip install -e '.[slurm]', or "
                                       "make test SLURM=1)")

# pe-fig2's two runs (a linear model on 40 points), shortened: seconds of training each.
SHORT = ["train.epochs=1000", "train.log_every=500", "train.checkpoint_every=500", "train.progress=false"]
LOCAL = ["hydra/launcher=submitit_local"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def job_logs(out: Path) -> str:
    return "".join(path.read_text() for path in sorted(out.glob("hydra/multirun/*/*/.submitit/*/*_log.out")))


@pytest.mark.slow
def test_a_two_job_multirun_through_submitit_is_reused_by_the_figure(tmp_path):
    out = tmp_path / "outputs"
    overrides = [*SHORT, f"paths.output_dir={out}"]
    result = subprocess.run([sys.executable, "-m", "pexp.train", "-m", "experiment=pe_fig2_ellipses,pe_fig2_line",
                             *LOCAL, *overrides], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {name: training_run_dir(compose_experiment(f"pe_fig2_{name}", overrides)) for name in ("ellipses", "line")}
    assert all(run.complete for run in runs.values())  # both jobs finished their run
    logs = job_logs(out)
    assert logs.count("Job completed successfully") >= 2 and all(str(run.path) in logs for run in runs.values())
    trained = {name: (run / "model.pt").stat().st_mtime_ns for name, run in runs.items()}

    figure = subprocess.run([sys.executable, "-m", "pexp.figures", "fig=pe-fig2", *overrides], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=900)
    assert figure.returncode == 0, figure.stderr[-3000:]
    assert all(f"reusing finished run {run.path}" in figure.stdout for run in runs.values())
    assert "[pexp] finished" not in figure.stdout  # nothing trained again
    assert {name: (run / "model.pt").stat().st_mtime_ns for name, run in runs.items()} == trained
    meta = json.loads((out / "figures" / "pe-fig2.meta.json").read_text())
    assert sorted(run["run_dir"] for run in meta["runs"]) == sorted(str(run.path) for run in runs.values())


@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    """What SLURM does on preemption (the signal submitit listens to, USR2 by default), sent to a local job once it
    has written a checkpoint: submitit requeues the job, and the run resumes from that checkpoint."""
    out = tmp_path / "outputs"
    overrides = [*SHORT, "train.epochs=4000", f"paths.output_dir={out}"]
    run = training_run_dir(compose_experiment("pe_fig2_ellipses", overrides))
    sweep = subprocess.Popen([sys.executable, "-m", "pexp.train", "-m", "experiment=pe_fig2_ellipses", *LOCAL,
                              *overrides], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not (run / "checkpoint.pt").exists() or not (run / ".lock").read_text().strip():
            assert sweep.poll() is None, sweep.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the job wrote no checkpoint in time"
            time.sleep(0.01)
        job = int((run / ".lock").read_text().split()[0])  # the job's process, holding the run's lock
        os.kill(job, signal.SIGUSR2)
        _, stderr = sweep.communicate(timeout=900)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, stderr[-3000:]
    logs = job_logs(out)
    assert "this job is preempted" in logs and "Requeued job" in logs
    assert f"resuming {run.path} at epoch" in logs
    assert run.complete and json.loads((run / "metrics.json").read_text())["epochs_trained"] == 4000
