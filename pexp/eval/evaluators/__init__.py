"""The evaluators, one module each (like ``pexp.figures``), registered here by their ``eval.name``."""
from __future__ import annotations

from typing import Callable

import pandas as pd
from omegaconf import DictConfig

from pexp.eval.evaluators.boundary import boundary_results
from pexp.eval.evaluators.margin import margin_results
from pexp.eval.evaluators.offmanifold import offmanifold_results, projected_results
from pexp.eval.evaluators.pca import dataset_pca_results, pca_results
from pexp.eval.evaluators.tangent import active_results, tangent_results

EVALUATORS: dict[str, Callable[..., pd.DataFrame]] = {"margin": margin_results, "boundary": boundary_results,
                                                      "pca": pca_results, "offmanifold": offmanifold_results,
                                                      "projected": projected_results, "active": active_results,
                                                      "tangent": tangent_results}
DATA_EVALUATORS: dict[str, Callable[[DictConfig, DictConfig], pd.DataFrame]] = {"dataset_pca": dataset_pca_results}
