"""Figures: ``pexp.figures.FIGURES`` maps each figure id of FIGURES.md to what makes it."""
from __future__ import annotations

from functools import partial

from pexp.figures.base import Figure
from pexp.figures.margins import all_vs_first_claims, plot_margin_cdfs

FIGURES: dict[str, Figure] = {
    "richness-fig2": Figure(
        id="richness-fig2",
        paper="R",
        what="margin CDFs (train, test) of Algorithm 1 at eps 0.020: input only vs all layers perturbed",
        runs={"first": "richness_fig2_first", "all": "richness_fig2_all"},
        evaluator="margin",
        claims=all_vs_first_claims,
        plot=partial(plot_margin_cdfs, panels={"first": "(a) perturbation at the input only",
                                               "all": "(b) perturbation at every layer"}),
    ),
}
