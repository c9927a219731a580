"""The evaluators, one module each (like ``pexp.figures``): each registers its ``eval.name``, its schema and its
function (:func:`pexp.eval.evaluators.common.register`) in :data:`SCHEMAS`, :data:`EVALUATORS` (of a trained run)
and :data:`DATA_EVALUATORS` (of a data set alone)."""
from __future__ import annotations

from pexp.eval.evaluators.common import DATA_EVALUATORS, EVALUATORS, SCHEMAS, register
# the modules register their evaluators when imported, in this order (the order the names are listed in)
from pexp.eval.evaluators import margin, boundary, pca, offmanifold, tangent  # noqa: E402,F401,I001

__all__ = ["DATA_EVALUATORS", "EVALUATORS", "SCHEMAS", "register"]
