"""`make bench ARGS=--quick` runs and writes a well-formed bench.json (no timing assertions)."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


def make_bench(args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``make bench ARGS=<args>`` in the environment running the tests (nothing to install), without real data."""
    venv = Path(sys.executable).parent.parent
    result = subprocess.run(["make", "-s", "-o", str(venv / ".installed"), "bench", f"VENV={venv}", f"ARGS={args}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=1500,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PEXP_DATA": str(tmp_path / "no-data")})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_bench_quick_writes_well_formed_json(tmp_path):
    out = tmp_path / "bench.json"
    result = make_bench(f"--quick --out {out} --runs-from {tmp_path / 'outputs'}", tmp_path)
    assert "| ratio" in result.stdout and "load average" in result.stdout  # the printed table

    bench = json.loads(out.read_text())
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
    ensemble = next(row for row in bench["rows"] if row["name"].startswith("7."))
    assert ensemble["largest_weight_difference"] < 1e-4  # the same runs, together and one at a time
    end_to_end = [row for row in bench["rows"] if row["name"].startswith("5.")]
    assert all("extrapolated" in row["name"] for row in end_to_end)  # no finished runs in tmp_path
    assert end_to_end[-1]["name"].endswith("total") and end_to_end[-1]["unit"] == "min"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_bench_all_times_each_figure_from_scratch_on_smoke_configs(tmp_path):
    """Row 8 (``--all``) on the make-smoke configs of one figure: its stage times and the total."""
    out = tmp_path / "bench.json"
    make_bench(f"--quick --all --figures pe-fig2 --rows 8 --out {out}", tmp_path)
    rows = json.loads(out.read_text())["rows"]
    assert [row["name"] for row in rows] == ["8. reproduce-all from scratch (smoke): pe-fig2",
                                             "8. reproduce-all from scratch (smoke): total (1 figures)"]
    figure, total = rows
    assert set(figure["stage_seconds"]) == {"train", "evaluate", "draw"}
    assert 0 < sum(figure["stage_seconds"].values()) <= figure["figure_seconds"] <= 60 * figure["ours"]
    assert total["met"] is True and total["ours"] >= figure["ours"]
    assert (ROOT / "outputs/bench/all/figures/pe-fig2.png").exists()
