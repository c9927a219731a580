"""Figures: ``pexp.figures.FIGURES`` maps each figure id of FIGURES.md to what makes it."""
from __future__ import annotations

from functools import partial

from pexp.figures.base import Figure, Run
from pexp.figures.margins import all_vs_first_claims, plot_margin_cdfs
from pexp.figures.toys import pe_fig1_claims, pe_fig2_claims, plot_pe_fig1, plot_pe_fig2

PE_FIG1_SEEDS = (1, 21, 41, 61, 81, 101)

FIGURES: dict[str, Figure] = {
    "richness-fig2": Figure(
        id="richness-fig2",
        paper="R",
        what="margin CDFs (train, test) of Algorithm 1 at eps 0.020: input only vs all layers perturbed",
        runs={"first": "richness_fig2_first", "all": "richness_fig2_all"},
        evaluator="margin",
        claims=all_vs_first_claims,
        plot=partial(plot_margin_cdfs, panels={"first": "(a) perturbation at the input only",
                                               "all": "(b) perturbation at every layer"},
                     title="richness-fig2: margins after Algorithm 1 at eps 0.020 (PE-net, airplane vs horse)"),
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
}
