"""Every claim carries the number its verdict judges (``judged``, what the report shows first), computed from the
same values as the verdict, per seed and pooled; a failing claim whose cause is known says why (``diagnosis``),
a claim that holds never does. Made-up tables, no training."""
import math

import numpy as np
import pandas as pd
import pytest

from conftest import assert_judged
from pexp.figures.base import number, seeded_claims
from pexp.figures.margins import UNPERTURBED, all_vs_first_claims, eps_sweep_claims, small_test_margin_claims
from pexp.figures.offmanifold import dataset_pca_claims, grid_claims
from pexp.figures.tangent import PUBLISHED_MAE, fig1_claims, fig3_claims, fig4_claims, table2, table2_claims
from pexp.figures.toys import pe_fig1_claims, pe_fig2_claims
from test_offmanifold_fig5 import rows as om_rows
from test_tangent_table2 import made_up_estimates


def test_number_gives_three_digits_and_the_unit():
    assert number(12.345, "points") == "12.3 points" and number(0.0123456, "%") == "0.0123%"
    assert number(2.5, "x") == "2.5x" and number(None) == number(math.nan) == "none" and number(math.inf) == "inf"


def margin_rows(run, split, margins, **tags):
    return [dict(run=run, split=split, margin=float(m), eps_max=0.3, data="synthetic", **tags) for m in margins]


def headline_table(seed, scale=1.0, misclassified_test=0):
    """richness-fig2's three runs: input only (test margins far below the train ones), all layers (closer, but
    more than 5 points apart), unperturbed (both curves a little worse than input only); ``misclassified_test``
    test points of input only and all layers misclassified unperturbed (margin 0)."""
    out = []
    out += margin_rows("first", "train", scale * np.linspace(0.03, 0.4, 200), seed=seed)
    out += margin_rows("first", "test", np.r_[np.zeros(misclassified_test), scale * np.linspace(
        0.002, 0.05, 60 - misclassified_test), scale * np.linspace(0.05, 0.4, 140)], seed=seed)
    out += margin_rows("all", "train", scale * np.linspace(0.01, 0.3, 200), seed=seed)
    out += margin_rows("all", "test", np.r_[np.zeros(misclassified_test),
                                            scale * np.linspace(0.0, 0.25, 200 - misclassified_test)], seed=seed)
    out += margin_rows("unperturbed", "train", scale * np.linspace(0.002, 0.25, 200), seed=seed)
    out += margin_rows("unperturbed", "test", scale * np.r_[np.linspace(0.001, 0.03, 80), np.linspace(0.03, 0.3, 120)],
                       seed=seed)
    return out


def test_headline_claims_carry_their_judged_numbers_per_seed_and_pooled():
    table = pd.DataFrame(headline_table(1) + headline_table(2, scale=1.1))
    metrics = {f"{label}/seed{seed}": dict(train_accuracy=1.0, test_accuracy=0.9)
               for label in ("first", "all", "unperturbed") for seed in (1, 2)}
    claims = assert_judged(seeded_claims(all_vs_first_claims, table, metrics, [1, 2]))
    assert len(claims) == 3 * 4
    for item in claims:
        pooled = item["claim"].startswith("mean of 2 seeds: ")
        measured = item["measured"]["mean"] if pooled else item["measured"]
        if "all layers" in item["claim"]:
            assert item["judged"] == (f"largest gap {measured['largest_gap']:.3g} points; mean gap "
                                      f"{measured['mean_gap_test_minus_train']:.3g} points (input only "
                                      f"{float(item['judged'].rsplit('(input only ', 1)[1].split()[0]):.3g} points)")
            assert not item["holds"] and measured["largest_gap"] > 5
            assert "5-point line is ours" in item["diagnosis"]
            assert f"to {measured['largest_gap']:.3g} points" in item["diagnosis"]
        elif "unperturbed" in item["claim"]:
            assert item["judged"] == (f"train {measured['train_improvement_points']:.3g} points, test "
                                      f"{measured['test_improvement_points']:.3g} points fewer flipped")
            assert not item["holds"] and f"improves by {measured['test_improvement_points']:.3g} points" \
                in item["diagnosis"]
        elif "input only" in item["claim"]:
            assert item["holds"] and "diagnosis" not in item
            assert item["judged"] == (f"{measured['test_percent_there']:.3g}% of the test points at radius "
                                      f"{measured['radius_train_1_percent']:.3g}")
        else:  # the search check: no attack columns in this table
            assert item["judged"] == "no point measured" and "diagnosis" not in item
    seed_gaps = {item["judged"] for item in claims if "all layers" in item["claim"]}
    assert len(seed_gaps) == 3  # each seed and the pool judged on their own numbers


def test_a_test_error_that_opens_the_gap_at_size_0_is_the_diagnosis():
    table = pd.DataFrame(headline_table(1, misclassified_test=30)).drop(columns="seed")
    claims = assert_judged(all_vs_first_claims(table, {}))
    (close,) = [item for item in claims if item["claim"].startswith("all layers")]
    assert not close["holds"] and "misclassified unperturbed" in close["diagnosis"]
    assert "15.5% of the test points" in close["diagnosis"]  # 31 of 200 at margin 0, counted as flipped there


def test_pe_fig4_and_pe_fig5_claims_judge_medians_and_means():
    rows = (margin_rows("cross-entropy", "train", np.linspace(0.01, 0.2, 50))
            + margin_rows("cross-entropy", "test", np.linspace(0.005, 0.15, 50))
            + margin_rows("squared error", "train", np.linspace(0.01, 0.2, 50))
            + margin_rows("squared error", "test", [0.01] * 20 + [math.inf] * 30))
    claims = assert_judged(small_test_margin_claims(pd.DataFrame(rows), {"cross-entropy": {}, "squared error": {}}))
    assert claims[0]["holds"] and claims[0]["judged"] == f"median test margin {np.median(np.linspace(0.005, 0.15, 50)):.3g}"
    assert not claims[1]["holds"] and claims[1]["judged"] == "median test margin inf (half or more censored)"
    sweep = []
    for label, eps, scale in ((UNPERTURBED, 0.0, 0.5), ("eps 0.005", 0.005, 1.0), ("eps 0.010", 0.01, 1.5),
                              ("eps 0.020", 0.02, 2.0)):
        sweep += margin_rows(label, "train", scale * np.linspace(0.01, 0.1, 40), eps=eps)
        sweep += margin_rows(label, "test", scale * np.linspace(0.005, 0.08, 40), eps=eps)
    metrics = {label: dict(train_accuracy=accuracy) for label, accuracy in
               ((UNPERTURBED, 1.0), ("eps 0.005", 1.0), ("eps 0.010", 1.0), ("eps 0.020", 0.975))}
    grow, error, test, compared = assert_judged(eps_sweep_claims(pd.DataFrame(sweep), metrics))[:4]
    train = grow["measured"]["mean_train_percent_flipped_0_to_0_1"]
    assert grow["holds"] and grow["judged"] == " / ".join(f"{v:.3g}%" for v in train.values()) + \
        " train flipped, by eps"
    assert error["holds"] and error["judged"] == "training error 2.5%"
    assert test["holds"] and test["judged"].endswith(" test flipped, by eps")
    assert compared["holds"] and compared["judged"].startswith(f"{train['eps 0.005']:.3g}% at eps 0.005, ")


def test_toy_claims_judge_the_margins_and_the_ratio():
    points = []
    for loss, margin in (("ce", 0.5), ("se", 1.5)):
        points += [dict(kind="point", seed=1, loss=loss, margin=m) for m in (margin, 2 * margin)]
    metrics = {"ce/seed1": dict(train_accuracy=1.0), "se/seed1": dict(train_accuracy=1.0)}
    (fig1,) = assert_judged(pe_fig1_claims(pd.DataFrame(points), metrics))
    assert fig1["holds"] and fig1["judged"] == "CE 0.5 vs SE 1.5"
    line = [dict(kind="point", dataset=1, x0=x, x1=0.0, target=int(x > 0), margin=abs(x) - 1.5)
            for x in (-4.0, -2.0, 2.0, 4.0)]
    (fig2,) = assert_judged(pe_fig2_claims(pd.DataFrame(line), {}))
    assert fig2["judged"] == f"ratio {fig2['measured']['ratio']:.3g}" and fig2["measured"]["ratio"] == \
        pytest.approx(0.25)


def test_tangent_claims_judge_shape_mae_and_ratios():
    rng = np.random.default_rng(0)
    counts = pd.DataFrame(dict(run="cifar10", split=np.repeat(["train", "test"], 400), data="synthetic",
                               layer1=rng.normal(50, 5, 800).round(), total=rng.normal(200, 10, 800).round()))
    for item in assert_judged([*fig1_claims(counts, {}), *fig4_claims(counts, {})]):
        skew = max(abs(m["skew"]) for m in item["measured"].values())
        assert item["judged"].startswith(f"largest |skew| {skew:.3g}, ")
    estimates = made_up_estimates(12, spread=0.01)
    (loss, accuracy) = assert_judged(fig3_claims(estimates, {}))
    assert accuracy["judged"].startswith(f"eq5 {accuracy['measured']['mae']['eq5']:.3g}, ")
    for item in (loss, accuracy):  # q within 1% of 1: a failure is the estimate staying at the train value
        assert ("diagnosis" in item) == (not item["holds"])
    claims = assert_judged(table2_claims(table2(estimates), {}))
    firm = claims[0]
    assert firm["judged"] == "ours / published: " + ", ".join(
        f"{name} {m['ratio']:.3g}x" for name, m in firm["measured"].items() if name in PUBLISHED_MAE)
    # q within 1% of 1: each MAE is the train/test gap, some ten times the published ~1%
    gap = float(table2(estimates).query("estimator == 'baseline'")["mae_accuracy"].iloc[-1])
    assert not firm["holds"] and f"here {gap:.3g} in accuracy" in firm["diagnosis"]
    assert "does not report" in firm["diagnosis"]
    best = next(item for item in claims if "the lowest CE MAE by eq. (7)" in item["claim"])
    assert best["judged"] == (f"lowest CE MAE {best['measured']['best_loss']}, lowest accuracy MAE "
                              f"{best['measured']['best_accuracy']}")
    assert ("diagnosis" in best) == (not best["holds"])
    far = estimates.assign(q_eq5=3.0, q_eq6=3.0, q_eq7=3.0)  # q far from 1: the MAE is not the gap, no diagnosis
    assert "diagnosis" not in assert_judged(table2_claims(table2(far), {}))[0]
    # eq. (7) alone far from 1: explained only when its weights collapsed onto one input (effective sample size ~1)
    for ess, explained in ((1.05, True), (20.0, False)):
        odd = estimates.assign(q_eq7=3.0, ess_train=ess, ess_test=ess)
        claims = [*fig3_claims(odd, {}), *table2_claims(table2(odd), {})]
        bound = next(item for item in claims if "with q near 1, so each MAE" in item["claim"])
        for item in (claims[0], claims[2], bound):  # fig3's CE, Table 2's firm accuracy claim, the bound
            assert not item["holds"] and ("diagnosis" in item) == explained
            assert not explained or f"median effective sample size {ess:.2f}" in item["diagnosis"]


def test_offmanifold_fig3_and_fig1_claims_judge_the_distances_and_counts():
    rows = []
    for setting, distance in (("a", 0.5), ("b", 0.8), ("c", 0.5), ("c_bias", 0.52), ("c_squared", 0.5)):
        rows += [row for seed in (1, 2) for row in om_rows("paper", setting, seed, distance, True, 0.31, 0.3, 0.5,
                                                             surface=False)]
    claims = {item["claim"]: item for item in assert_judged(grid_claims(pd.DataFrame(rows), {}))}
    larger_b = claims["the off-manifold distance is larger in (b) smaller initialisation than in (a) vanilla"]
    assert larger_b["holds"] and larger_b["judged"] == "median 0.8 in (b), 0.5 in (a)"
    larger_c = claims["the off-manifold distance is larger in (c) weight decay than in (a) vanilla"]
    readings = claims["(c) differs from (a) under some reading of the first-layer penalty (a non-replication when it "
                      "does not)"]
    assert readings["judged"] == "median beside (a)'s: c +0.0%, c_bias +4.0%, c_squared +0.0%"
    assert not readings["holds"] and readings["diagnosis"] == larger_c["diagnosis"]
    assert "every reading tried" in readings["diagnosis"]
    spectrum = pd.DataFrame([dict(dataset=name, data="synthetic", component=k + 1, cumulative=(k + 1) / 300)
                             for name in ("cifar10", "mnist") for k in range(300)])
    for item in assert_judged(dataset_pca_claims(spectrum, {})):
        assert item["judged"] == f"{item['measured']} components"


def test_a_gap_to_the_published_sphere_far_wider_than_our_spread_is_not_noise():
    from test_offmanifold_fig4 import fig4_rows

    from pexp.figures.offmanifold import PUBLISHED_FIG4, projected_claims

    published = PUBLISHED_FIG4["sphere"]["complement"]
    rows = [row for factor, value in published.items() for seed, scale in ((1, 0.6), (2, 0.62))
            for row in fig4_rows("sphere", float(factor), seed, "complement", [scale * value] * 4)]
    (beside,) = [c for c in assert_judged(projected_claims(pd.DataFrame(rows), {}))
                 if c["claim"] == "sphere: off the subspace distance beside the published values"]
    assert not beside["holds"] and beside["judged"] == "largest gap 39% (factor 0.5)"
    assert "sphere panel is not public" in beside["diagnosis"]
    assert "(at least 2 per factor) spread by at most 3.28% of their mean" in beside["diagnosis"]
