"""Figures: ``pexp.figures.FIGURES`` maps each figure id of FIGURES.md to what makes it (the registry lives in
:mod:`pexp.figures.base`, which needs it too; it is filled here)."""
from __future__ import annotations

from functools import partial

from pexp.figures.base import FIGURES, Figure, Run
from pexp.figures.margins import (UNPERTURBED, all_vs_first_claims, eps_sweep_claims, plot_margin_cdfs,
                                  small_test_margin_claims)
from pexp.figures.offmanifold import (FIG5_VARIANTS, READINGS, SETTINGS, dataset_pca_claims, dataset_pca_configs,
                                      dataset_pca_table, fig5_claims, grid_claims, offmanifold_claims,
                                      plot_dataset_pca, plot_offmanifold_2d, plot_offmanifold_3d, plot_projected,
                                      projected_claims, projected_configs, projected_table)
from pexp.figures.pca import layer_pca_claims, plot_layer_pca, plot_trained_layer_pca, richer_layers_claims
from pexp.figures.tangent import (TABLE2_RUNS, build_fig2, build_fig3, build_table2, fig1_claims, fig2_claims,
                                  fig2_configs, fig3_claims, fig4_claims, plot_active_layers, plot_active_totals,
                                  plot_fig2, plot_fig3, plot_table2, table2_claims, table2_markdown)
from pexp.figures.toys import pe_fig1_claims, pe_fig2_claims, plot_pe_fig1, plot_pe_fig2

PE_FIG1_SEEDS = (1, 21, 41, 61, 81, 101)
PE_FIG5_EPS = (0.005, 0.010, 0.020)
OM_SEEDS = tuple(range(1, 9))  # setting (b) converges for some seeds only: run eight, report how many did
OM_GRID_SEEDS = tuple(range(1, 5))  # the 3D grids: four seeds per setting
OM_FIG4_DATA = {"sphere": "(a) sphere of radius 28 in a 28-dimensional subspace of R^784, random labels",
                "mnist": "(b) MNIST, ten classes, perturbed on / off the span of its top 32 PCA directions"}


def om_runs(prefix: str, seeds: tuple[int, ...] = OM_SEEDS, settings: tuple[str, ...] = tuple(SETTINGS),
            variant: str | None = None) -> dict[str, Run]:
    """Experiment ``<prefix>_<setting>`` for each setting and seed; ``variant``: also a ``variant`` tag, and the
    label starts with it (two variants of one figure side by side)."""
    head, tags = (f"{variant}/", (("variant", variant),)) if variant else ("", ())
    return {f"{head}{setting}/seed{seed}": Run(f"{prefix}_{setting}", (f"seed={seed}",),
                                                (*tags, ("setting", setting), ("seed", seed)))
            for setting in settings for seed in seeds}

# richness-fig2 / pe-fig6: the two Algorithm 1 runs, and the unperturbed net (pe-fig4's squared-error run) that
# PE section 6 compares them with (in the table and the claims, not drawn: the paper's figure has two panels)
ALL_VS_FIRST = dict(runs={"first": "richness_fig2_first", "all": "richness_fig2_all", "unperturbed": "pe_fig4_se"},
                    evaluator="margin", claims=all_vs_first_claims, seeds=True)

FIGURES.update({
    "richness-fig2": Figure(
        id="richness-fig2",
        paper="R",
        what="margin CDFs (train, test) of Algorithm 1 at eps 0.020: input only vs all layers perturbed",
        **ALL_VS_FIRST,
        plot=partial(plot_margin_cdfs, panels={"first": "(a) perturbation at the input only",
                                               "all": "(b) perturbation at every layer"},
                     title="richness-fig2: margins after Algorithm 1 at eps 0.020 (PE-net, airplane vs horse)"),
    ),
    "pe-fig6": Figure(
        id="pe-fig6",
        paper="PE",
        what="all layers vs first layer only (the richness-fig2 runs, found by hash, not retrained)",
        **ALL_VS_FIRST,
        plot=partial(plot_margin_cdfs, panels={"first": "(a) only the first layer perturbed",
                                               "all": "(b) all layers perturbed"},
                     title="pe-fig6: Algorithm 1 at eps 0.020, first layer vs all layers"),
    ),
    "pe-fig4": Figure(
        id="pe-fig4",
        paper="PE",
        what="margin CDFs of the PE-net trained with cross-entropy and with squared error (Algorithm 1, eps 0)",
        runs={"cross-entropy": "pe_fig4_ce", "squared error": "pe_fig4_se"},
        evaluator="margin",
        claims=small_test_margin_claims,
        seeds=True,
        plot=partial(plot_margin_cdfs, panels={"cross-entropy": "(a) cross-entropy",
                                               "squared error": "(b) squared error"},
                     title="pe-fig4: neither loss gives test margin"),
    ),
    "pe-fig5": Figure(
        id="pe-fig5",
        paper="PE",
        what="margin CDFs of Algorithm 1 (all layers) at eps 0.005, 0.010, 0.020 (the sweep-eps multirun), beside "
             "the unperturbed network of pe-fig4 (b), which the paper compares them with",
        runs={UNPERTURBED: Run("pe_fig4_se", (), (("eps", 0.0),)),
              **{f"eps {eps:.3f}": Run("pe_alg1", (f"perturb.eps={eps}",), (("eps", eps),)) for eps in PE_FIG5_EPS}},
        evaluator="margin",
        claims=eps_sweep_claims,
        seeds=True,
        plot=partial(plot_margin_cdfs, panels={UNPERTURBED: "no perturbation (pe-fig4 (b), squared error)",
                                               **{f"eps {eps:.3f}": f"eps = {eps:.3f}" for eps in PE_FIG5_EPS}},
                     title="pe-fig5: Algorithm 1 at three radii, beside the unperturbed network"),
    ),
    "richness-fig1": Figure(
        id="richness-fig1",
        paper="R",
        what="cumulative explained variance of the first 80 principal components of each hidden layer",
        runs={"cnn": "richness_fig1"},
        evaluator="pca",
        claims=layer_pca_claims,
        plot=plot_layer_pca,
    ),
    "richness-fig3": Figure(
        id="richness-fig3",
        paper="R",
        what="beyond the paper: cumulative explained variance of each hidden layer of the PE-net trained without "
             "perturbation (Algorithm 1 at eps 0), input only and all layers (eps 0.020), the richness-fig2 runs",
        runs={"no perturbation": "pe_fig4_se", "input only": "richness_fig2_first",
              "all layers": "richness_fig2_all"},
        evaluator="pca_subset",
        claims=richer_layers_claims,
        plot=partial(plot_trained_layer_pca, order={"no perturbation": "no perturbation",
                                                    "input only": "input only (eps 0.020)",
                                                    "all layers": "all layers (eps 0.020)"},
                     title="richness-fig3: PCA of the PE-net's hidden layers (2,000 training points), three "
                           "trainings"),
        beyond=True,
    ),
    "pe-multiclass": Figure(
        id="pe-multiclass",
        paper="PE",
        what="beyond the paper: Algorithm 1 for all ten CIFAR-10 classes (PE section 7.1, Corollary 3), margin CDFs "
             "of the nearest-target classifier, input only vs all layers at eps 0.020",
        runs={"first": "pe_multiclass_first", "all": "pe_multiclass_all"},
        evaluator="margin",
        claims=all_vs_first_claims,
        plot=partial(plot_margin_cdfs, panels={"first": "(a) perturbation at the input only",
                                               "all": "(b) perturbation at every layer"},
                     title="pe-multiclass: Algorithm 1 on ten classes at eps 0.020 (margin: smallest change of the "
                           "nearest target vector)"),
        seeds=True,
        beyond=True,
    ),
    "offmanifold-fig2": Figure(
        id="offmanifold-fig2",
        paper="OM",
        what="1D data (7 points on the diagonal), two-layer net: vanilla vs smaller init vs weight decay",
        runs=om_runs("om_fig2"),
        evaluator="offmanifold",
        claims=partial(offmanifold_claims, inner=True),
        plot=partial(plot_offmanifold_2d, title="offmanifold-fig2: two-layer ReLU network on one-dimensional data"),
    ),
    "offmanifold-fig6": Figure(
        id="offmanifold-fig6",
        paper="OM",
        what="1D data (7 points on the diagonal), five-layer net: vanilla vs smaller init vs weight decay",
        runs=om_runs("om_fig6"),
        evaluator="offmanifold",
        claims=partial(offmanifold_claims, inner=True),
        plot=partial(plot_offmanifold_2d, title="offmanifold-fig6: five-layer ReLU network on one-dimensional data"),
    ),
    "pe-fig1": Figure(
        id="pe-fig1",
        paper="PE",
        what="2D toy, six seeds: cross-entropy vs squared-error decision boundaries and their margins",
        runs={f"{loss}/seed{seed}": Run(f"pe_fig1_{loss}", (f"seed={seed}",), (("seed", seed), ("loss", loss)))
              for seed in PE_FIG1_SEEDS for loss in ("ce", "se")},
        evaluator="boundary",
        claims=pe_fig1_claims,
        plot=plot_pe_fig1,
    ),
    "pe-fig2": Figure(
        id="pe-fig2",
        paper="PE",
        what="linear classifier trained with cross-entropy: its margin vs the optimal (hard-margin SVM) margin",
        runs={"ellipses": Run("pe_fig2_ellipses", tags=(("dataset", 1),)),
              "line": Run("pe_fig2_line", tags=(("dataset", 2),))},
        evaluator="boundary",
        claims=pe_fig2_claims,
        plot=plot_pe_fig2,
    ),
    "offmanifold-fig1": Figure(
        id="offmanifold-fig1",
        paper="OM",
        what="cumulative explained variance of PCA of all of CIFAR-10 and of all of MNIST (no training)",
        runs={},
        evaluator="dataset_pca",
        claims=dataset_pca_claims,
        plot=plot_dataset_pca,
        build=dataset_pca_table,
        configs=dataset_pca_configs,
    ),
    "offmanifold-fig3": Figure(
        id="offmanifold-fig3",
        paper="OM",
        what="25 grid points at z = 0.5 in R^3, width-4000 net: vanilla vs smaller init vs l2 penalty; distance along z",
        runs={**om_runs("om_fig3", OM_GRID_SEEDS), **om_runs("om_fig3", OM_GRID_SEEDS, tuple(READINGS)[1:])},
        evaluator="offmanifold",
        claims=grid_claims,
        plot=partial(plot_offmanifold_3d, title="offmanifold-fig3: two-dimensional data at z = 0.5, two-layer net "
                                                "of width 4000"),
    ),
    "offmanifold-fig4": Figure(
        id="offmanifold-fig4",
        paper="OM",
        what="distance to the boundary (unrestricted / on / off the data subspace) against the first layer's init "
             "factor, the authors' setup, beside their published values (runs of make sweep-init)",
        runs={},
        evaluator="projected",
        claims=projected_claims,
        plot=partial(plot_projected, datasets=OM_FIG4_DATA),
        build=projected_table,
        configs=projected_configs,
    ),
    "offmanifold-fig5": Figure(
        id="offmanifold-fig5",
        paper="OM",
        what="25 grid points, width-400 net: vanilla vs smaller init vs weight decay, under the paper's settings "
             "(target margin 0.1, the x-y plane) and as the authors' code runs it (target 0.01, the plane z = 0.5)",
        runs={**om_runs("om_fig5", OM_GRID_SEEDS, variant="paper"),
              **om_runs("om_fig5_code", OM_GRID_SEEDS, variant="code")},
        evaluator="offmanifold",
        claims=fig5_claims,
        plot=partial(plot_offmanifold_3d, variants=FIG5_VARIANTS,
                     title="offmanifold-fig5: two-dimensional data on a plane of R^3, two-layer net of width 400 "
                           "(default init)"),
    ),
    "tangent-fig1": Figure(
        id="tangent-fig1",
        paper="TS",
        what="active hidden units per input (all 400), train vs test, after 50 epochs: (a) MNIST, (b) CIFAR-10",
        runs={"mnist": "ts_mnist", "cifar10": "ts_cifar10"},
        evaluator="active",
        claims=fig1_claims,
        plot=partial(plot_active_totals, panels={"mnist": "(a) MNIST run", "cifar10": "(b) CIFAR-10 run"},
                     title="tangent-fig1: active neurons of the 4 x 100 ReLU MLP after training"),
    ),
    "tangent-fig2": Figure(
        id="tangent-fig2",
        paper="TS",
        what="the bound of eq. (2) against depth for several mu, sigma, w_max and widths (formula, log scale)",
        runs={},
        evaluator="bound",
        claims=fig2_claims,
        plot=plot_fig2,
        build=build_fig2,
        configs=fig2_configs,
    ),
    "tangent-fig3": Figure(
        id="tangent-fig3",
        paper="TS",
        what="label-free estimates (eqs. 5, 6, 7, baseline est = train) vs actual test CE and accuracy per epoch",
        runs={"cifar10": "ts_cifar10"},
        evaluator="tangent",
        claims=fig3_claims,
        plot=plot_fig3,
        build=build_fig3,
    ),
    "tangent-fig4": Figure(
        id="tangent-fig4",
        paper="TS",
        what="active units per input per hidden layer (1-4) and in total, train vs test, CIFAR-10",
        runs={"cifar10": "ts_cifar10"},
        evaluator="active",
        claims=fig4_claims,
        plot=partial(plot_active_layers, title="tangent-fig4: active neurons per layer after training"),
    ),
    "tangent-table2": Figure(
        id="tangent-table2",
        paper="TS",
        what="MAE of the label-free estimates (per sample and / 64, three accuracy readings) over all epochs and over "
             "epochs 1..k (k = 1 to 50) beside the published one, with the bound MAE ~ mean |test - train|; Table 1's "
             "variants",
        runs=TABLE2_RUNS,
        evaluator="tangent",
        claims=table2_claims,
        plot=plot_table2,
        build=build_table2,
        markdown=table2_markdown,
    ),
})
