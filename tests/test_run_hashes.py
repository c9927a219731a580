"""Every experiment's run hash, pinned: a change to a config, a schema or how configs compose that moves a hash
would silently retrain that experiment's finished runs (hours for the real-data ones). A deliberate change of an
experiment's defaults updates its line here, and says so."""
from pathlib import Path

import pytest

from pexp.figures.compose import compose_experiment
from pexp.eval.evaluators.common import eval_dir
from pexp.runs import RunDir, training_run_dir

EXPERIMENTS = Path(__file__).resolve().parent.parent / "conf" / "experiment"
HASHES = {
    "om_fig1_cifar10": "0520176989c8",
    "om_fig1_mnist": "edc02b754a05",
    "om_fig2_a": "3eb490077342",
    "om_fig2_b": "84b6ff762654",
    "om_fig2_c": "0bdcd657b88a",
    "om_fig3_a": "d9d18feb799c",
    "om_fig3_b": "08cada64c4c7",
    "om_fig3_c": "4a745875bd41",
    "om_fig3_c_bias": "38db6f8d3329",
    "om_fig3_c_squared": "30e3c432815d",
    "om_fig4_mnist": "b7f39770a771",
    "om_fig4_sphere": "8afd59fbc6c2",
    "om_fig4_sphere_authors": "0d6a467ba970",
    "om_fig5_a": "0e22ea73a320",
    "om_fig5_b": "424a2e6dfdf7",
    "om_fig5_c": "ed22801c58f7",
    "om_fig5_code_a": "67fd11c00ed0",
    "om_fig5_code_b": "0ff5699b2da0",
    "om_fig5_code_c": "2a0869a3b5e4",
    "om_fig6_a": "3caa60216943",
    "om_fig6_b": "ab50d94d70e9",
    "om_fig6_c": "a78b1b153701",
    "pe_alg1": "5f70326762f6",
    "pe_fig1_ce": "21c8b9503e55",
    "pe_fig1_se": "97b5a930fa26",
    "pe_fig2_ellipses": "8a910c671368",
    "pe_fig2_line": "2dd262c556c7",
    "pe_fig4_ce": "add93e54f203",
    "pe_fig4_se": "87f7b7ab8637",
    "pe_multiclass_all": "cdf31a9a1fb3",  # loss.direction_rounds 3 -> 10 with the multi-start direction search
    "pe_multiclass_first": "7c11c31b49ba",  # (likewise; was d1e867ef7c70, pe_multiclass_all was 833adfdb509a)
    "richness_fig1": "a863c7ce726d",
    "richness_fig2_all": "5f70326762f6",
    "richness_fig2_first": "e373ed25d4ea",
    "ts_cifar10": "280d2feaeaeb",
    "ts_cifar10_bn": "baefbf6f5bb7",
    "ts_cifar10_dropout": "3118f7a68431",
    "ts_mnist": "fac2579bfbf4",
}


def test_every_experiment_is_pinned():
    assert sorted(path.stem for path in EXPERIMENTS.glob("*.yaml")) == sorted(HASHES)


@pytest.mark.parametrize("experiment", sorted(HASHES))
def test_run_hash_unchanged(experiment, tmp_path):
    cfg = compose_experiment(experiment, [f"paths.output_dir={tmp_path}"])
    assert training_run_dir(cfg).path.name == HASHES[experiment]


# Every experiment's own evaluation, and every eval option on richness_fig2_first: the folder name of its results
# (evaluator name and eval config hash). A moved hash recomputes finished evaluations (half an hour per margin split).
EVAL_DIRS = {
    "om_fig1_cifar10": "dataset_pca-6f5b2af99bd1",
    "om_fig1_mnist": "dataset_pca-6f5b2af99bd1",
    "om_fig2_a": "offmanifold-403aadb3e87f",
    "om_fig2_b": "offmanifold-403aadb3e87f",
    "om_fig2_c": "offmanifold-403aadb3e87f",
    "om_fig3_a": "offmanifold-7cfbf33108e4",
    "om_fig3_b": "offmanifold-7cfbf33108e4",
    "om_fig3_c": "offmanifold-7cfbf33108e4",
    "om_fig3_c_bias": "offmanifold-7cfbf33108e4",
    "om_fig3_c_squared": "offmanifold-7cfbf33108e4",
    "om_fig4_mnist": "projected-2962bdc182a0",
    "om_fig4_sphere": "projected-ec4b1f15c895",
    "om_fig4_sphere_authors": "projected-1e73e0574cd2",
    "om_fig5_a": "offmanifold-7cfbf33108e4",
    "om_fig5_b": "offmanifold-7cfbf33108e4",
    "om_fig5_c": "offmanifold-7cfbf33108e4",
    "om_fig5_code_a": "offmanifold-7cfbf33108e4",
    "om_fig5_code_b": "offmanifold-7cfbf33108e4",
    "om_fig5_code_c": "offmanifold-7cfbf33108e4",
    "om_fig6_a": "offmanifold-403aadb3e87f",
    "om_fig6_b": "offmanifold-403aadb3e87f",
    "om_fig6_c": "offmanifold-403aadb3e87f",
    "pe_alg1": "margin-e8ec6d227f83",
    "pe_fig1_ce": "boundary-4ac394667eaf",
    "pe_fig1_se": "boundary-4ac394667eaf",
    "pe_fig2_ellipses": "boundary-1a8979777c6b",
    "pe_fig2_line": "boundary-84fc90449765",
    "pe_fig4_ce": "margin-e8ec6d227f83",
    "pe_fig4_se": "margin-e8ec6d227f83",
    "pe_multiclass_all": "margin-e8ec6d227f83",
    "pe_multiclass_first": "margin-e8ec6d227f83",
    "richness_fig1": "margin-e8ec6d227f83",
    "richness_fig2_all": "margin-e8ec6d227f83",
    "richness_fig2_first": "margin-e8ec6d227f83",
    "ts_cifar10": "margin-e8ec6d227f83",
    "ts_cifar10_bn": "margin-e8ec6d227f83",
    "ts_cifar10_dropout": "margin-e8ec6d227f83",
    "ts_mnist": "margin-e8ec6d227f83",
    "eval=active": "active-3b6a94eaaeef",
    "eval=bound": "bound-2206a389859f",
    "eval=boundary": "boundary-4ac394667eaf",
    "eval=dataset_pca": "dataset_pca-6f5b2af99bd1",
    "eval=margin": "margin-e8ec6d227f83",
    "eval=margin_authors": "margin-18b11ba68b03",
    "eval=offmanifold": "offmanifold-403aadb3e87f",
    "eval=pca": "pca-359aeb06c2e7",
    "eval=pca_subset": "pca-f1f4dbcd94f0",
    "eval=projected": "projected-7fb11c3003ef",
    "eval=tangent": "tangent-b0975d32f9c2",
}


@pytest.mark.parametrize("key", sorted(EVAL_DIRS))
def test_eval_hash_unchanged(key, tmp_path):
    experiment, overrides = (("richness_fig2_first", [key]) if key.startswith("eval=") else (key, []))
    cfg = compose_experiment(experiment, [f"paths.output_dir={tmp_path}", *overrides])
    assert eval_dir(RunDir(tmp_path), cfg.eval).path.name == EVAL_DIRS[key]
