"""scripts/reproduce_all.py: every figure, past failures, then the report; smoke overrides as `make smoke` had."""
import importlib.util
import subprocess
import sys

import pytest

from pexp.figures import FIGURES

from conftest import ROOT

spec = importlib.util.spec_from_file_location("reproduce_all", ROOT / "scripts" / "reproduce_all.py")
reproduce_all = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce_all)


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
