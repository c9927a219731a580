"""`make bench ARGS=--quick` runs and writes a well-formed bench.json into the folder it is given (no timing
assertions, nothing written into the checkout)."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def bench_env(tmp_path: Path) -> dict[str, str]:
    """This checkout's pexp (the bench is a script: its folder, not the checkout, heads sys.path), one thread,
    no real data."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PEXP_DATA": str(tmp_path / "no-data")}


def make_bench(args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``make bench ARGS=<args>`` in the environment running the tests (nothing to install), without real data."""
    venv = Path(sys.executable).parent.parent
    result = subprocess.run(["make", "-s", "-o", str(venv / ".installed"), "bench", f"VENV={venv}", f"ARGS={args}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=1500, env=bench_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_make_bench_quick_writes_well_formed_json(tmp_path):
    out = tmp_path / "bench"
    result = make_bench(f"--quick --out {out} --runs-from {tmp_path / 'outputs'}", tmp_path)
    assert "| ratio" in result.stdout and "load average" in result.stdout  # the printed table
    assert sorted(path.name for path in out.iterdir()) == ["bench.json"]

    bench = json.loads((out / "bench.json").read_text())
    assert set(bench) == {"machine", "mode", "sizes", "rows", "seconds", "data"}
    machine = bench["machine"]
    assert machine["cpu_count"] >= 1 and machine["torch_threads"] >= 1
    assert len(machine["loadavg_start"]) == 3 and len(machine["loadavg_end"]) == 3
    assert bench["mode"] == "quick" and bench["data"] == "synthetic_cifar2"
    names = [row["name"] for row in bench["rows"]]
    for prefix in ("1.", "2.", "3a.", "3b.", "3c.", "4.", "5.", "6.", "7."):
        assert any(name.startswith(prefix) for name in names), prefix
    for row in bench["rows"]:
        assert set(row) >= {"name", "ours", "reference", "unit", "ratio", "target", "met", "notes"}
        assert isinstance(row["ours"], (int, float)) and math.isfinite(row["ours"]) and row["ours"] >= 0
        assert row["met"] in (True, False, None)
        assert (row["target"] is None) == (row["met"] is None)
        if row["ratio"] is not None:
            assert row["ratio"] > 0
    threads = next(row for row in bench["rows"] if row["name"].startswith("6."))
    assert all(value is not None for value in threads["settings"].values())  # every child process measured
    ensemble = next(row for row in bench["rows"] if row["name"].startswith("7."))
    assert ensemble["largest_weight_difference"] < 1e-4  # the same runs, together and one at a time
    end_to_end = [row for row in bench["rows"] if row["name"].startswith("5.")]
    assert all("extrapolated" in row["name"] for row in end_to_end)  # no finished runs in tmp_path
    assert end_to_end[-1]["name"].endswith("total") and end_to_end[-1]["unit"] == "min"


@pytest.mark.slow
def test_bench_all_times_each_figure_from_scratch_on_smoke_configs(tmp_path):
    """Row 8 on the make-smoke configs of one figure, into <out>/all: its stage times and the total;
    run twice, the second run replaces the folder the first one made."""
    out = tmp_path / "bench"
    leftover = out / "all/leftover.txt"
    for _ in range(2):
        make_bench(f"--quick --figures pe-fig2 --rows 8 --out {out}", tmp_path)
        assert not leftover.exists()
        rows = json.loads((out / "bench.json").read_text())["rows"]
        assert [row["name"] for row in rows] == ["8. reproduce-all from scratch (smoke): pe-fig2",
                                                 "8. reproduce-all from scratch (smoke): total (1 figures)"]
        figure, total = rows
        assert not figure["notes"].startswith("FAILED") and "failed: none" in total["notes"]
        assert set(figure["stage_seconds"]) == {"train", "evaluate", "draw"}
        assert 0 < sum(figure["stage_seconds"].values()) <= figure["figure_seconds"] <= 60 * figure["ours"]
        assert total["ours"] >= figure["ours"]
        assert (out / "all/figures/pe-fig2.png").exists()
        leftover.write_text("from the first run")


@pytest.mark.slow
def test_bench_refuses_to_replace_a_folder_it_did_not_make(tmp_path):
    """A from-scratch folder that holds someone else's files stops the bench at start-up (exit 2) and is kept."""
    kept = tmp_path / "bench/all/mine.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("not the bench's")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench.py"), "--quick", "--rows", "8",
                             "--out", str(tmp_path / "bench")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env=bench_env(tmp_path))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "holds files the bench did not make" in result.stderr.strip().splitlines()[-1]
    assert kept.read_text() == "not the bench's" and not (tmp_path / "bench/bench.json").exists()
