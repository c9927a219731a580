"""``python -m pexp.runs``: a finished, a partial, a locked and a stale-locked run listed as such; --prune removes
the partial runs nobody holds, and only those."""
import os
import signal
import subprocess
import sys
import time

import pytest

from pexp.eval.evaluate import eval_dir
from pexp.figures.compose import compose_experiment
from pexp.runs import RunDir, training_run_dir
from pexp.runs_table import RunRow, format_table, list_runs, prune
from pexp.train.loop import train

from conftest import ROOT

TOY = ["train.log_every=100", "train.checkpoint_every=100", "train.progress=false"]


pytestmark = pytest.mark.usefixtures("one_thread")


def rows_by_run(out):
    return {row.path: row for row in list_runs(out / "runs")}


@pytest.mark.slow
def test_finished_partial_locked_and_stale_runs(tmp_path):
    out = tmp_path / "outputs"
    finished = compose_experiment("pe_fig1_ce", [*TOY, "seed=5", "train.epochs=200", f"paths.output_dir={out}"])
    run = train(finished)
    eval_dir(run, finished.eval).mark_complete()  # an evaluation of it (its results are not what is listed)
    long = [*TOY, "train.epochs=200000", f"paths.output_dir={out}"]
    partial = training_run_dir(compose_experiment("pe_fig1_se", long))
    process = subprocess.Popen([sys.executable, "-m", "pexp.train", "experiment=pe_fig1_se", *long], cwd=ROOT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (partial / "train_log.csv").exists():
            assert process.poll() is None, process.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
        rows = rows_by_run(out)
        assert rows[run.path].state == "finished" and rows[run.path].status == "finished"
        assert rows[run.path].experiment == "pe_fig1_ce"
        assert rows[run.path].overrides == ["train.epochs=200", "seed=5"]  # data.seed follows seed: not listed
        assert rows[run.path].evaluations == ["boundary"] and rows[run.path].size > 0
        locked = rows[partial.path]
        assert locked.state == "locked" and locked.experiment == "pe_fig1_se"
        assert locked.status.startswith(f"locked by pid {process.pid} on ")
        assert locked.overrides == ["train.epochs=200000"]
        assert prune(list(rows.values()), dry_run=False) == []  # nothing nobody holds: nothing removed
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()

    stale = rows_by_run(out)[partial.path]
    assert stale.state == "stale"
    assert stale.status.startswith(f"stale lock of pid {process.pid} on ") and "partial at epoch " in stale.status
    epoch = int(stale.status.split("partial at epoch ")[1].split("/")[0])
    assert 100 <= epoch < 200000 and stale.status.endswith("/200000")
    with partial.lock():  # a process that takes the lock and releases it cleanly: no holder left behind
        pass
    assert rows_by_run(out)[partial.path].status == f"partial at epoch {epoch}/200000"

    table = format_table(list_runs(out / "runs"), out / "runs")
    assert "2 run(s)" in table and "1 finished, 1 partial" in table and "pe_fig1_se" in table

    result = subprocess.run([sys.executable, "-m", "pexp.runs", "--output-dir", str(out), "--prune", "--dry-run"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "would remove 1 partial run(s) nobody holds" in result.stdout and str(partial.path) in result.stdout
    assert partial.path.exists()
    result = subprocess.run([sys.executable, "-m", "pexp.runs", "--output-dir", str(out), "--prune"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "removing 1 partial run(s)" in result.stdout and "removed 1 run(s)" in result.stdout
    assert not partial.path.exists() and run.complete  # the finished run stays


def test_a_run_held_in_this_process_is_not_pruned(tmp_path):
    run = RunDir(tmp_path / "runs" / "default" / "0123456789ab")
    with run.lock():
        rows = list_runs(tmp_path / "runs", explain=False)
        assert [row.state for row in rows] == ["locked"]
        assert prune([RunRow(run.path, "partial", "partial at epoch 0", 0)]) == []  # listed partial: the lock wins
    assert run.path.exists()
    assert [row.state for row in list_runs(tmp_path / "runs", explain=False)] == ["partial"]
    assert prune(list_runs(tmp_path / "runs", explain=False)) == [run.path] and not run.path.exists()
