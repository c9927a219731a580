"""scripts/reproduce_all.py: its plan, every figure past failures, a second call resuming an interrupted one, the
final table, then the report; smoke overrides as `make smoke` had."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pexp.figures import FIGURES
from pexp.runs import RunDir, write_json
from scripts import reproduce_all

from conftest import ROOT


def test_every_figure_gets_a_command_with_the_overrides_last():
    commands = reproduce_all.figure_commands(list(FIGURES), True, ["seed=3"])
    assert [figure_id for figure_id, _, _ in commands] == list(FIGURES)
    by_id = {figure_id: argv for figure_id, argv, _ in commands}
    assert by_id["richness-fig2"][3:] == ["fig=richness-fig2", "scale=smoke", "paths.output_dir=outputs/smoke",
                                          "train.progress=false", "data=synthetic_cifar2", "seed=3"]
    assert "train.epochs=3000" in by_id["pe-fig1"] and "data=synthetic_cifar2" not in by_id["pe-fig1"]
    full = reproduce_all.figure_commands(["pe-fig1"], False, [])
    assert full == [("pe-fig1", [sys.executable, "-m", "pexp.figures", "fig=pe-fig1"], {})]


def test_report_goes_where_the_figures_went():
    assert reproduce_all.report_command(True, [])[3:] == ["--output-dir", "outputs/smoke"]
    assert reproduce_all.report_command(True, ["paths.output_dir=/x"])[3:] == ["--output-dir", "/x"]
    assert reproduce_all.report_command(False, ["paths.figures_dir=/f"])[3:] == ["--figures", "/f"]


def test_a_failing_figure_does_not_stop_the_others_and_the_report_is_still_written(capsys):
    calls = []

    def fake_run(argv, cwd, env=None):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 1 if "fig=pe-fig1" in argv else 0)

    commands = reproduce_all.figure_commands(["richness-fig2", "pe-fig1", "pe-fig2"], False, [])
    failed = reproduce_all.run_all(commands, ["python", "-m", "pexp.report"], run=fake_run)
    assert failed == ["pe-fig1"]
    assert [argv[3] if len(argv) > 3 else argv[-1] for argv in calls] == [
        "fig=richness-fig2", "fig=pe-fig1", "fig=pe-fig2", "pexp.report"]
    assert "pe-fig1: FAILED (exit 1)" in capsys.readouterr().out


@pytest.mark.slow
def test_dry_run_lists_the_commands():
    result = subprocess.run([sys.executable, "scripts/reproduce_all.py", "--dry-run", "--smoke", "seed=2"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(FIGURES) + 1 and lines[-1] == "-m pexp.report --output-dir outputs/smoke"
    assert all(line.endswith("seed=2") for line in lines[:-1])


def test_the_plan_says_what_each_figure_reuses_resumes_or_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = [f"paths.output_dir={tmp_path}"]
    (plan,) = reproduce_all.plan_figures(["pe-fig2"], True, out)
    trains = [unit for unit in plan.units if unit.kind == "train"]
    assert len(trains) == 2 and {unit.status for unit in plan.units} == {"train", "evaluate"}
    (tmp_path / "runs" / trains[0].key).mkdir(parents=True)
    (tmp_path / "runs" / trains[0].key / "checkpoint.pt").write_bytes(b"")
    RunDir(tmp_path / "runs" / trains[1].key).mark_complete()
    (plan,) = reproduce_all.plan_figures(["pe-fig2"], True, out)
    assert [plan.count("train", status) for status in ("reuse", "resume", "train")] == [1, 1, 0]
    # seconds recorded on this CPU before make the estimate; a unit never timed here is counted apart
    history = {f"train:{trains[0].key}": 30.0, "draw:pe-fig2:smoke": 2.0}
    assert reproduce_all.estimate(plan, history, True, set()) == (32.0, 2)  # the two evaluations: no record
    assert "1/1/0" in reproduce_all.plan_text([plan], {"pe-fig2": (32.0, 2)}, set())


class Interrupted(Exception):
    """Stands for Ctrl-C (pytest stops its session on a real KeyboardInterrupt)."""


def test_an_interrupted_call_resumes_where_it_stopped_and_ends_with_one_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    figures, calls, stop_in = tmp_path / "figures", [], ["pe-fig2"]

    def fake_run(argv, cwd, env=None):
        figure = next((item[4:] for item in argv if item.startswith("fig=")), "report")
        calls.append(figure)
        if figure in stop_in:
            stop_in.remove(figure)
            raise Interrupted  # the first call is stopped in its second figure
        if figure != "report":
            write_json(figures / f"{figure}.claims.json", [{"claim": "a", "holds": True}, {"claim": "b", "holds":
                       figure == "pe-fig1"}, {"claim": "c", "holds": False, "diagnostic": True}])
        return subprocess.CompletedProcess(argv, 0)

    argv = ["--smoke", "--figures", "pe-fig1,pe-fig2", f"paths.output_dir={tmp_path}"]
    with pytest.raises(Interrupted):
        reproduce_all.main(argv, run=fake_run)
    state = json.loads((tmp_path / "reproduce-all" / "state.json").read_text())
    assert state["figures"]["pe-fig1"]["status"] == "made" and state["figures"]["pe-fig2"]["status"] == "pending"
    assert reproduce_all.main(argv, run=fake_run) == 0
    assert calls == ["pe-fig1", "pe-fig2", "pe-fig2", "report"]  # pe-fig1 made once, pe-fig2 again
    out = capsys.readouterr().out
    assert "resuming the call started" in out and "pe-fig1: made in an earlier sitting" in out
    summary = json.loads((tmp_path / "reproduce-all" / "summary.json").read_text())
    rows = {row["figure"]: row for row in summary["figures"]}
    assert rows["pe-fig1"]["claims"] == [2, 0, 1] and rows["pe-fig2"]["claims"] == [1, 1, 1]
    assert rows["pe-fig2"]["sittings"] == 2 and summary["finished_utc"]
    assert "| pe-fig2 | made |" in (tmp_path / "reproduce-all" / "summary.md").read_text()
    calls.clear()  # a finished call: the next one is a new reproduce-all (its runs are still reused by hash)
    assert reproduce_all.main(argv, run=fake_run) == 0 and calls == ["pe-fig1", "pe-fig2", "report"]


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_mid_way_a_second_call_resumes_and_finishes(tmp_path, how):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [sys.executable, "scripts/reproduce_all.py", "--smoke", "--figures", "tangent-fig2,offmanifold-fig1",
               f"paths.output_dir={tmp_path}"]
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    state_path = tmp_path / "reproduce-all" / "state.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None:
        if state_path.exists() and '"made"' in state_path.read_text():
            break
        time.sleep(0.1)
    time.sleep(1.0)  # inside the next figure's process (its imports alone take longer)
    os.killpg(first.pid, how)  # the whole group: the script and the figure it runs
    first.wait()
    figures = json.loads(state_path.read_text())["figures"]
    assert figures["tangent-fig2"]["status"] == "made"
    if how == signal.SIGTERM:  # stopped as by Ctrl-C: the figure it was in keeps its call and seconds
        assert first.returncode == 130 and figures["offmanifold-fig1"]["calls"] == 1
        assert figures["offmanifold-fig1"]["wall_seconds"] > 0
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "tangent-fig2: made in an earlier sitting" in second.stdout
    table = (tmp_path / "reproduce-all" / "summary.md").read_text()
    assert "| tangent-fig2 | made |" in table and "| offmanifold-fig1 | made |" in table
