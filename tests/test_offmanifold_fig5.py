"""offmanifold-fig5: the paper's settings and the authors' code's (target margin 0.01, grid at z = 0.5) side by
side, each judged on its own; a run stopped by the epoch cap is drawn and labelled with its final min y f."""
import json
import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from pexp.data import load_dataset
from pexp.figures import FIGURES
from pexp.figures.base import figure_configs, make_figure
from pexp.figures.compose import compose_experiment
from pexp.figures.offmanifold import AUTHORS_CODE_FIG5, fig5_claims, plot_offmanifold_3d

from conftest import assert_judged

FIG5 = FIGURES["offmanifold-fig5"]


@pytest.mark.parametrize("setting", ["a", "b", "c"])
def test_the_code_setting_is_the_paper_setting_with_target_001_and_the_plane_z05(setting):
    paper, code = (compose_experiment(name, ["paths.output_dir=/nowhere"])
                   for name in (f"om_fig5_{setting}", f"om_fig5_code_{setting}"))
    assert code.train.target_margin == pytest.approx(0.01) and paper.train.target_margin == pytest.approx(0.1)
    assert code.data.plane == "z05" and paper.data.plane == "xy"
    z = load_dataset(code.data).train.x[:, 2]
    assert torch.equal(z, torch.full_like(z, 0.5))
    assert torch.equal(load_dataset(paper.data).train.x[:, 2], torch.zeros_like(z))
    rest = [OmegaConf.to_container(cfg, resolve=True) for cfg in (paper, code)]
    for item in rest:
        item.pop("run_name"), item["data"].pop("plane"), item["train"].pop("target_margin")
    assert rest[0] == rest[1]  # everything else (lr, init, weight decay, the 100,000-epoch cap) is the paper's


def test_the_figure_trains_both_settings_for_every_seed():
    configs = figure_configs(FIG5, ["paths.output_dir=/nowhere"])
    by_variant = {}
    for label, cfg in configs.items():
        by_variant.setdefault(label.split("/")[0], set()).add(
            (str(cfg.run_name), float(cfg.train.target_margin), str(cfg.data.plane), int(cfg.seed)))
    assert set(by_variant) == {"paper", "code"}
    assert {(name[-1], target, plane) for name, target, plane, _ in by_variant["paper"]} == \
        {(s, 0.1, "xy") for s in "abc"}
    assert {(name, target, plane) for name, target, plane, _ in by_variant["code"]} == \
        {(f"om_fig5_code_{s}", 0.01, "z05") for s in "abc"}
    assert len(by_variant["paper"]) == len(by_variant["code"]) == 12


def rows(variant, setting, seed, distance, reached, final, target, z, surface=True):
    common = dict(variant=variant, setting=setting, seed=seed, reached_target=reached, final_margin=final,
                  target_margin=target, run=f"{variant}/{setting}/seed{seed}", data="toy")
    out = [dict(common, kind="point", index=5 * i + j, target=(i + j) % 2, distance=distance, x0=i / 4, x1=j / 4,
                x2=z) for i in range(5) for j in range(5)]
    if surface:
        out += [dict(common, kind="surface", u=u / 2, v=v / 2, distance=distance, side=1) for u in range(3)
                for v in range(3)]
    return out


def fig5_table(paper_a_reached=False):
    """Both settings, two seeds each: under the paper's settings (a) is capped on both seeds (min y f -0.219 and
    +0.041) unless ``paper_a_reached``; (b) and (c) far from the plane under the code's settings only."""
    out = []
    for variant, target, z, far in (("paper", 0.1, 0.0, 0.2), ("code", 0.01, 0.5, 2.0)):
        for seed, capped_margin in ((1, -0.219), (2, 0.041)):
            capped = variant == "paper" and not paper_a_reached
            out += rows(variant, "a", seed, 0.5, not capped, capped_margin if capped else target + 0.001, target, z)
            out += rows(variant, "b", seed, far, True, target + 0.002, target, z)
            out += rows(variant, "c", seed, far, True, target + 0.003, target, z)
    return pd.DataFrame(out)


def panel_of(fig, variant_title, setting_name):
    for subfig in fig.subfigs:
        if variant_title in subfig._suptitle.get_text():
            return next(ax for ax in subfig.axes if ax.get_title().startswith(setting_name))
    raise AssertionError(f"no row {variant_title!r}")


def test_a_capped_run_is_drawn_and_labelled_with_its_min_yf():
    fig = plot_offmanifold_3d(fig5_table(), "t", variants={"paper": "the paper's settings", "code": "the code's"})
    try:
        assert len(fig.subfigs) == 2 and all(len(subfig.axes) >= 3 for subfig in fig.subfigs)
        capped = panel_of(fig, "the paper's settings", "(a)")
        assert capped.images, "the capped run's boundary map is drawn"
        assert "seed 1: not converged, min y f = -0.219" in capped.get_title()
        assert "0/2 seeds converged to 0.1" in capped.get_title() and "2: +0.041" in capped.get_title()
        assert [text.get_text() for text in capped.texts] == ["not converged, min y f = -0.219"]
        converged = panel_of(fig, "the code's", "(a)")
        assert converged.images and "seed 1: converged" in converged.get_title() and not converged.texts
        assert "z = 0.5, target margin 0.01" in fig.subfigs[1]._suptitle.get_text()
    finally:
        plt.close(fig)


def test_each_setting_is_judged_on_its_own_and_the_authors_code_runs_are_reported():
    claims = {item["claim"]: item for item in assert_judged(fig5_claims(fig5_table(), {}))}
    paper = "the paper's settings (target margin 0.1, grid at z = 0)"
    code = "as the authors' code runs it (target margin 0.01, grid at z = 0.5)"
    larger = "the off-manifold distance is larger in ({}) {} than in (a) vanilla"
    for setting, name in (("b", "smaller initialisation"), ("c", "weight decay")):
        assert not claims[f"{paper}: {larger.format(setting, name)}"]["holds"]  # (a) never converged
        assert claims[f"{code}: {larger.format(setting, name)}"]["holds"]       # 2.0 > 0.5
    measured = claims[f"{paper}: {larger.format('b', 'smaller initialisation')}"]["measured"]["a"]
    assert measured["median_distance"] is None and measured["final_margin_by_seed"] == {1: -0.219, 2: 0.041}
    assert measured["median_distance_all_seeds"] == pytest.approx(0.5)
    assert "not of its code" in claims[f"{paper}: {larger.format('b', 'smaller initialisation')}"]["measured"]["note"]
    assert "note" not in claims[f"{code}: {larger.format('b', 'smaller initialisation')}"]["measured"]
    every_run = "every run reaches the target margin within the epoch cap"
    assert not claims[f"{paper}: {every_run}"]["holds"] and claims[f"{code}: {every_run}"]["holds"]
    assert claims[f"{paper}: {every_run}"]["judged"] == "(a) 0/2, (b) 2/2, (c) 2/2 seeds converged"
    # why the paper's settings fail: the authors' own code misses the target there too
    for text in (f"{paper}: {every_run}", f"{paper}: {larger.format('b', 'smaller initialisation')}"):
        assert "the authors' own code, run with the paper's settings, misses it too" in claims[text]["diagnosis"]
    assert claims[f"{paper}: {larger.format('b', 'smaller initialisation')}"]["diagnosis"].startswith(
        "No seed of (a) vanilla reached the target margin")
    assert claims[f"{code}: {larger.format('b', 'smaller initialisation')}"]["judged"] == "median 2 in (b), 0.5 in (a)"
    authors = next(item for text, item in claims.items() if "trained by the authors' own code" in text)
    assert not authors["holds"] and authors["measured"]["a"]["final_margin_by_run"] == [0.041, -0.219, -0.013, -0.067]
    assert authors["judged"] == "(a) 0/4, (b) 0/?, (c) 0/? runs reached it" and "epoch cap" in authors["diagnosis"]
    assert authors["measured"]["a"]["runs"] == 4 and authors["measured"]["a"]["reached_target"] == 0
    assert authors["measured"]["c"]["train_accuracy"] == pytest.approx(0.52)
    assert authors["measured"]["b"]["final_margin_by_run"] == [-0.68]
    assert "measured runs of the authors' own code" in authors["measured"]["source"]
    assert authors["measured"]["ours"]["a"]["converged_seeds"] == 0
    assert "non-replication of the paper's text, not of its code" in authors["expected"]
    assert AUTHORS_CODE_FIG5["target_margin"] == 0.1
    json.dumps(list(claims.values()))  # the claims file can hold them


def test_when_every_paper_run_converges_its_distances_are_judged():
    claims = {item["claim"]: item for item in assert_judged(fig5_claims(fig5_table(paper_a_reached=True), {}))}
    paper = "the paper's settings (target margin 0.1, grid at z = 0)"
    assert claims[f"{paper}: every run reaches the target margin within the epoch cap"]["holds"]
    larger = claims[f"{paper}: the off-manifold distance is larger in (b) smaller initialisation than in (a) vanilla"]
    assert larger["measured"]["a"]["median_distance"] == pytest.approx(0.5)
    assert larger["measured"]["b"]["median_distance"] == pytest.approx(0.2) and not larger["holds"]
    assert "diagnosis" not in larger  # every run converged: a plain failure, no known cause


@pytest.mark.slow
def test_the_figure_is_made_with_both_settings(tmp_path):
    overrides = [f"paths.output_dir={tmp_path}", "train.progress=false", "model.widths=[8]", "train.epochs=20",
                 "train.log_every=10", "train.checkpoint_every=10", "++eval.surface_grid=3", "eval.tolerance=0.05"]
    paths = make_figure(FIG5, overrides, tmp_path / "figures", progress=False)
    table = pd.read_csv(paths["csv"])
    assert set(table["variant"]) == {"paper", "code"}
    planes = table[table["kind"] == "point"].groupby("variant")["x2"].unique()
    assert planes["paper"].tolist() == [0.0] and planes["code"].tolist() == [0.5]
    assert table["final_margin"].notna().all() and set(table["target_margin"]) == {0.1, 0.01}
    claims = assert_judged(json.loads(paths["claims.json"].read_text()))
    assert sum("the paper's settings" in item["claim"] for item in claims) == 4
    assert sum("as the authors' code runs it" in item["claim"] for item in claims) == 3
    ours = [item for item in claims if item["claim"].endswith("every run reaches the target margin within the "
                                                              "epoch cap")]
    assert len(ours) == 2 and all(len(item["measured"][setting]["final_margin_by_seed"]) == 4 and
                                  all(map(math.isfinite, item["measured"][setting]["final_margin_by_seed"].values()))
                                  for item in ours for setting in "abc")
