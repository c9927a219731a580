"""Run directories: stable hashing, atomic writes that never corrupt what was there."""
import pytest

from pexp.figures.compose import compose_experiment
from pexp.runs import config_hash, run_identity, write_json, write_text, atomic_write, RunDir


def test_hash_ignores_where_data_lives_but_not_what_is_trained():
    base = compose_experiment("richness_fig2_all")
    moved = compose_experiment("richness_fig2_all", ["data.root=/elsewhere", "data.verify_checksums=false"])
    assert config_hash(run_identity(base)) == config_hash(run_identity(moved))
    other = compose_experiment("richness_fig2_all", ["perturb.eps=0.01"])
    assert config_hash(run_identity(base)) != config_hash(run_identity(other))
    assert config_hash(run_identity(base)) != config_hash(run_identity(compose_experiment("richness_fig2_first")))


def test_failed_write_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "results.csv"
    write_text(target, "old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temp file left behind


def test_json_is_strict(tmp_path):
    write_json(tmp_path / "a.json", {"x": float("inf"), "y": float("nan"), "z": [1.5]})
    assert (tmp_path / "a.json").read_text().split() == ['{', '"x":', '"inf",', '"y":', 'null,', '"z":', '[',
                                                          '1.5', ']', '}']


def test_completion_marker(tmp_path):
    run = RunDir(tmp_path / "r")
    assert not run.complete
    with run.lock():
        run.mark_complete({"a": 1})
    assert run.complete


def test_completion_marker_records_the_sitting_and_machine(tmp_path):
    """A finished unit of work records its wall time (lock to marker) and the machine it ran on, load at both ends;
    a training run and an evaluation both get it from the one run-directory mechanism."""
    import json
    import time

    from pexp.train.loop import train

    run = RunDir(tmp_path / "work")
    with run.lock():
        time.sleep(0.05)
        run.mark_complete(dict(answer=42))
    marker = json.loads((run / "COMPLETE").read_text())
    assert marker["answer"] == 42
    sitting = marker["sitting"]
    assert sitting["seconds"] >= 0.05 and sitting["cpu"] and sitting["cpu_count"] >= 1 and sitting["torch_threads"] >= 1
    assert sitting["loadavg_start"] >= 0 and sitting["loadavg_end"] >= 0
    trained = train(compose_experiment("pe_fig2_line", ["train.epochs=3", "train.progress=false",
                                                        f"paths.output_dir={tmp_path}"]))
    sitting = json.loads((trained / "COMPLETE").read_text())["sitting"]
    assert {"seconds", "cpu", "torch_threads", "loadavg_start", "loadavg_end"} <= set(sitting)
