"""Time accounted from the records of runs and evaluations; model passes counted; compute floors."""
import json

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from benchmarks import accounting
from pexp.data import load_dataset
from pexp.figures.compose import compose_experiment
from pexp.runs import RunDir, write_json, write_text
from pexp.train.loop import train

RATE = dict(matmul_gflops=1e-6, conv_gflops=2e-6, matmul_op="-", conv_op="-", threads=1, cpu="test CPU",
            loadavg_start=0.0, loadavg_end=0.0)  # 1,000 and 2,000 FLOP/s: floors in round numbers
MLP = dict(name="mlp", widths=[3], outputs=1)  # 4 -> 3 -> 1: F = 2 (4 x 3 + 3 x 1) = 30 FLOPs per sample
# 7 points, plain training: 3 epochs of 7 rows forward and 7 backward to the weights
CONFIG = dict(model=MLP, data=dict(name="diagonal7"), perturb=dict(layers="none", eps=0.0, pieces=4, ramp_steps=4),
              train=dict(epochs=3))


def _run(root, name, seconds, eval_seconds, passes=None, ensemble=None, sittings=True):
    run = root / "runs" / name / "0123456789ab"
    where = dict(cpu="test CPU", torch_threads=2, loadavg_start=0.5, loadavg_end=1.5, seconds=seconds / 2)
    marker = dict(input_shape=[4], epochs_trained=3, sitting=where)
    if ensemble:
        marker["ensemble_size"] = ensemble
    if sittings:
        marker["sittings"] = dict(count=2, seconds=seconds, **(passes or dict.fromkeys(
            ("forward_rows", "backward_rows", "weight_backward_rows"))))
    write_json(run / "COMPLETE", marker)
    write_json(run / "metrics.json", marker)
    write_text(run / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(CONFIG)))
    # the log: rows after epochs 2 and 3, seconds per epoch: 2 x 1.5 + 1 x 3 = 6 s
    pd.DataFrame(dict(epoch=[2, 3], seconds=[1.5, 3.0])).to_csv(run / "train_log.csv", index=False)
    evaluation = run / "eval" / "margin-abc"
    write_json(evaluation / "COMPLETE", dict(seconds=eval_seconds, sitting=where))
    return run, evaluation


def _meta(root, figure, runs, draw):
    write_json(root / "figures" / f"{figure}.meta.json", dict(
        id=figure, stage_seconds=dict(train=0.0, evaluate=0.0, draw=draw),
        runs=[dict(label=name, experiment=name, run_dir=str(run), eval_dir=str(evaluation))
              for name, (run, evaluation) in runs.items()]))


def test_sums_per_figure_and_a_shared_run_once(tmp_path):
    counted = dict(forward_rows=10, backward_rows=6, weight_backward_rows=4)
    a = _run(tmp_path, "a", 100.0, 10.0, passes=counted)
    b = _run(tmp_path, "b", 200.0, 20.0)                  # no counters: the formula
    c = _run(tmp_path, "c", 999.0, 30.0, ensemble=4)      # an ensemble member: its train_log share, 6 s
    d = _run(tmp_path, "d", 999.0, 40.0, sittings=False)  # an older run: its train_log, 6 s
    _meta(tmp_path, "fig-x", dict(a=a, b=b), draw=1.0)
    _meta(tmp_path, "fig-y", dict(b=b, c=c, d=d), draw=2.0)
    result = accounting.account(tmp_path, throughput=RATE)
    x, y = result["figures"]
    assert x["id"] == "fig-x" and x["seconds"] == pytest.approx(100 + 10 + 200 + 20 + 1)
    assert y["seconds"] == pytest.approx(200 + 20 + 6 + 30 + 6 + 40 + 2)
    assert result["total"]["seconds"] == pytest.approx(100 + 10 + 200 + 20 + 6 + 30 + 6 + 40 + 1 + 2)
    assert result["total"]["by_stage"] == pytest.approx(dict(train=312, evaluate=100, draw=3))
    shared = {(stage["label"], stage["stage"]) for figure in result["figures"] for stage in figure["stages"]
              if stage["shared"]}
    assert shared == {("b", "train"), ("b", "evaluate")} and result["total"]["shared"] == 2
    train_a = x["stages"][0]
    # 10 forward rows x F + 2 input-gradient rows x F + 4 weight-update rows x (2F - F_first), F_first = 2 x 4 x 3:
    # 20 x 30 - 4 x 24 = 504 FLOPs at 1,000/s
    assert (train_a["passes_how"], train_a["floor_seconds"], train_a["ratio"]) == ("counted", pytest.approx(0.504),
                                                                                   pytest.approx(100 / 0.504))
    assert train_a["slow"] and train_a["cpu"] == "test CPU" and train_a["threads"] == 2
    train_b = x["stages"][2]  # 21 forward x F + 21 weight-update rows x (2F - F_first) = 63 x 30 - 21 x 24 = 1,386
    assert (train_b["passes_how"], train_b["floor_seconds"]) == ("formula", pytest.approx(1.386))
    evaluate_a = x["stages"][1]
    assert evaluate_a["floor_seconds"] is None and evaluate_a["seconds"] == 10.0  # no counters: no floor


def test_main_writes_json_and_markdown(tmp_path, capsys, monkeypatch):
    _meta(tmp_path, "fig-x", dict(a=_run(tmp_path, "a", 100.0, 10.0)), draw=1.0)
    monkeypatch.setattr(accounting, "measure_throughput", lambda threads=None: RATE)
    accounting.main(["--output-dir", str(tmp_path)])
    written = json.loads((tmp_path / "bench" / "accounting.json").read_text())
    assert written["total"]["seconds"] == pytest.approx(111)
    assert "## fig-x: 111.0 s" in (tmp_path / "bench" / "accounting.md").read_text()
    assert "fig-x: 111.0 s" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="2"):
        accounting.main(["--output-dir", str(tmp_path / "empty")])
    assert "it has no figures/*.meta.json" in capsys.readouterr().err


def test_each_floor_is_taken_at_the_threads_its_stage_ran_with(tmp_path, monkeypatch):
    """A stage that ran on one thread is held to the one-thread rate, one on two threads to the two-thread rate."""
    counted = dict(forward_rows=10, backward_rows=6, weight_backward_rows=4)  # 20 F - 4 F_first = 504 FLOPs
    one, two = _run(tmp_path, "one", 100.0, 10.0, passes=counted), _run(tmp_path, "two", 100.0, 10.0, passes=counted)
    marker = json.loads((one[0] / "COMPLETE").read_text())
    marker["sitting"]["torch_threads"] = 1
    write_json(one[0] / "COMPLETE", marker)
    _meta(tmp_path, "fig-x", dict(one=one, two=two), draw=1.0)
    asked = []

    def measure(threads=None):
        asked.append(threads)
        return dict(RATE, threads=threads, matmul_gflops=1e-6 * threads)  # 1,000 FLOP/s per thread

    monkeypatch.setattr(accounting, "measure_throughput", measure)
    monkeypatch.setattr(accounting.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(accounting.torch, "get_num_threads", lambda: 2)
    result = accounting.account(tmp_path)
    assert sorted(asked) == [1, 2] and sorted(result["throughput_by_threads"]) == [1, 2]
    floors = {stage["label"]: stage["floor_seconds"] for stage in result["figures"][0]["stages"]
              if stage["stage"] == "train"}
    assert floors == dict(one=pytest.approx(0.504), two=pytest.approx(0.252))
    assert "1 thread(s)" in accounting.markdown(result) and "2 thread(s)" in accounting.markdown(result)


def test_linear_flops_by_the_counter_equal_the_closed_form():
    layer = torch.nn.Linear(37, 11)
    for batch in (1, 5):
        flops = accounting.counted_flops(layer, torch.zeros(batch, 37))
        assert flops == dict(matmul=2 * 37 * 11 * batch, conv=0, other=0)


def test_formula_matches_the_counted_training_passes(tmp_path):
    """A small Algorithm 1 run (PE-net on synthetic data): the counters count exactly the rows it pushes through,
    which is the formula's training passes plus the error counts of its log rows and of its end."""
    n, m, epochs, pieces = 20, 10, 2, 4
    cfg = compose_experiment("richness_fig2_all", [
        "data=synthetic_cifar2", f"data.n_train={n}", f"data.n_test={m}", "model.size=1", f"train.epochs={epochs}",
        "train.batch_size=10", "train.progress=false", f"paths.output_dir={tmp_path}"])
    run = train(cfg)
    assert len(load_dataset(cfg.data).train.y) == n
    counted = json.loads((run / "COMPLETE").read_text())["sittings"]
    # epoch 1 at radius 0 (the ramp): n rows forward and backward (weights); epoch 2: the search's first step over
    # the clean batch (n), pieces - 1 steps over both perturbed copies (2n each), then the update on both copies
    by_hand = dict(forward_rows=n + n * (1 + 2 * (pieces - 1) + 2), backward_rows=n + n * (1 + 2 * (pieces - 1) + 2),
                   weight_backward_rows=n + 2 * n)
    assert accounting.formula_passes(run.path, epochs) == by_hand
    errors = epochs * (n + m) + (n + m)  # the error counts of each log row and of the end (no gradient)
    assert counted == dict(count=1, seconds=counted["seconds"], forward_rows=by_hand["forward_rows"] + errors,
                           backward_rows=by_hand["backward_rows"], weight_backward_rows=by_hand["weight_backward_rows"])


def test_resumed_training_adds_its_sittings(tmp_path):
    """A run stopped after its first epoch and resumed: the marker's totals cover both sittings (seconds and
    passes), each sitting recorded with its machine."""
    n, m = 30, 10
    overrides = ["data=synthetic_mnist", f"data.n_train={n}", f"data.n_test={m}", "model.widths=[8]",
                 "train.batch_size=10", "train.keep_states=false", "train.progress=false",
                 f"paths.output_dir={tmp_path}"]
    first = train(compose_experiment("ts_mnist", [*overrides, "train.epochs=1"]))
    cfg = compose_experiment("ts_mnist", [*overrides, "train.epochs=3"])
    import shutil

    from pexp.runs import training_run_dir

    resumed = training_run_dir(cfg)  # the three-epoch run, started from the one-epoch run's files
    shutil.copytree(first.path, resumed.path)
    (resumed / "COMPLETE").unlink()
    train(cfg)
    sittings = json.loads((resumed / "sittings.json").read_text())
    totals = json.loads((resumed / "COMPLETE").read_text())["sittings"]
    assert totals["count"] == len(sittings) == 2 and all(item["cpu"] and item["torch_threads"] for item in sittings)
    assert totals["seconds"] == pytest.approx(sum(item["seconds"] for item in sittings))
    # sitting 1: 1 epoch of n, its log row (n + m) and its end (n + m); sitting 2: 2 epochs and their log rows, end
    assert totals["forward_rows"] == (n + 2 * (n + m)) + (2 * n + 2 * (n + m) + (n + m))
    assert totals["backward_rows"] == totals["weight_backward_rows"] == 3 * n


def test_an_evaluation_counts_the_rows_through_the_model(tmp_path, monkeypatch):
    """The margin evaluation's counters agree with an independent count of the rows that reach the model."""
    from benchmarks.common import CountingModel
    from pexp.eval.evaluate import evaluate
    from pexp.losses import Loss

    cfg = compose_experiment("richness_fig2_all", [
        "data=synthetic_cifar2", "data.n_train=20", "data.n_test=10", "model.size=1", "train.epochs=1",
        "perturb=none", "perturb.eps=0", "train.batch_size=10", "train.progress=false", "eval=margin", "eval.n_train=2",
        "eval.n_test=1", "eval.resolution=0.02", "eval.steps=5", "eval.first_estimate=null", "eval.apgd=false", f"paths.output_dir={tmp_path}"])
    run = train(cfg)
    seen = []
    original = Loss.as_logits  # the margin evaluator's view of the model (mse: the base class's)
    monkeypatch.setattr(Loss, "as_logits", lambda self, model: seen.append(CountingModel(original(self, model)))
                        or seen[-1])
    evaluate(run, cfg.eval, progress=False)
    out = next((run / "eval").glob("margin-*"))
    totals = json.loads((out / "COMPLETE").read_text())["sittings"]
    assert totals["forward_rows"] == seen[0].with_gradient + seen[0].without_gradient > 0
    assert 0 < totals["backward_rows"] <= seen[0].with_gradient  # each gradient step's forward has one backward


def test_a_build_stage_leaves_out_the_work_of_its_runs_done_in_the_call(tmp_path):
    """A figure computed by its own code lists its runs and its build's wall time: the runs finished during that
    call count in their own rows, not twice."""
    from datetime import datetime, timezone

    run = _run(tmp_path, "e", 10.0, 5.0)  # finished now, during the call below
    _meta(tmp_path, "fig-z", dict(e=run), draw=1.0)
    path = tmp_path / "figures" / "fig-z.meta.json"
    meta = json.loads(path.read_text())
    meta.update(stage_seconds=dict(build=50.0, draw=1.0), seconds=60.0,
                created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    write_json(path, meta)
    (figure,) = accounting.account(tmp_path, throughput=RATE)["figures"]
    build = next(stage for stage in figure["stages"] if stage["stage"] == "build")
    assert build["seconds"] == pytest.approx(50 - 10 - 5) and figure["seconds"] == pytest.approx(51)


def test_make_bench_all_is_the_accounting(tmp_path, monkeypatch):
    """``make bench ARGS=--all`` sums a finished output folder (here an empty one: one line, exit 2, nothing made)."""
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run([sys.executable, "benchmarks/bench.py", "--all", "--runs-from", str(tmp_path / "none"),
                           "--out", str(tmp_path / "bench")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "none" in done.stderr and not (tmp_path / "bench").exists()
