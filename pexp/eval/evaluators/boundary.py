"""``eval=boundary``: 2D toys, each training point's distance to the boundary and the boundary traced."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import contourpy
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from pexp.errors import ConfigError
from pexp.data import load_dataset
from pexp.eval.evaluators.common import register
from pexp.eval.geometry import exact_margins_2d
from pexp.eval.margin import SearchKeys, SearchSettings
from pexp.losses import Loss
from pexp.models import AsLogits, EntryNet, score
from pexp.runs import RunDir
from pexp.schema import UNSET, cross_check, has_schema, integer, is_number, plain_list


@dataclass
class BoundaryConfig(SearchKeys):
    """eval=boundary (conf/eval/boundary.yaml): the l2 search settings (:data:`pexp.eval.margin.SearchKeys`) and the
    traced region."""

    name: str = "boundary"
    view: Any = UNSET  # [x_min, x_max, y_min, y_max]: check_view
    grid: int = integer(400, ge=2)  # grid points per axis
    seed: int = integer(0, ge=0)


@cross_check("eval")
def check_view(cfg: Any) -> None:
    if not has_schema(cfg.eval, BoundaryConfig):
        return
    view = plain_list(cfg.eval.get("view"))
    if not (isinstance(view, list) and len(view) == 4 and all(is_number(v) for v in view)
            and view[0] < view[1] and view[2] < view[3]):
        raise ConfigError(f"eval.view={view!r} is not allowed: must be [x_min, x_max, y_min, y_max] with "
                          f"x_min < x_max and y_min < y_max")


def boundary_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                     progress: bool) -> pd.DataFrame:
    """2D toys: rows ``kind=point`` (training points: x0, x1, target, margin = Euclidean distance to the boundary,
    0 when misclassified; ``method``: how it was found; ``search_margin``: the l2 margin search's value, a check)
    and rows ``kind=boundary`` (the boundary traced on the grid: segment, x0, x1). The margin is exact for an
    affine model (distance to its hyperplane) and for a one-hidden-layer (leaky) ReLU network (its linear
    regions, :func:`exact_margins_2d`); other networks take the search's value (inf: censored at eps_max)."""
    data = load_dataset(cfg.data)
    threshold = Loss.from_config(cfg.loss).decision_threshold
    x, y = data.train.x, data.train.y
    if x.shape[1] != 2:
        raise ConfigError(f"eval=boundary is for 2D data: data.name={cfg.data.name!r} has {x.shape[1]} features")
    torch.manual_seed(int(eval_cfg.seed))
    search = SearchSettings.from_config(eval_cfg, norm="l2", bounds=(-1e6, 1e6), progress=progress).build()
    searched = search(AsLogits(model, threshold), x, y).double()
    if len(model.blocks) == 1:  # affine model: the exact distance to its hyperplane
        layer = model.blocks[0].affine
        w = (layer.weight[0] if layer.out_features == 1 else layer.weight[1] - layer.weight[0]).detach().double()
        b = float(layer.bias[0] if layer.out_features == 1 else layer.bias[1] - layer.bias[0]) - threshold
        signed = (x.double() @ w + b) / w.norm() * torch.where(y == 1, 1.0, -1.0).double()
        margins, method = signed.clamp(min=0), "exact"
    else:
        margins, method = exact_margins_2d(model, x, y, threshold), "exact"
        if margins is None:
            margins, method = searched, "search"
    boundary = trace_boundary(model, threshold, eval_cfg.view, int(eval_cfg.grid))
    points = pd.DataFrame(dict(kind="point", index=np.arange(len(y)), x0=x[:, 0].numpy(), x1=x[:, 1].numpy(),
                               target=y.numpy(), margin=margins.double().numpy(), method=method,
                               search_margin=searched.numpy(), eps_max=float(eval_cfg.eps_max),
                               rng_order=str(cfg.data.get("rng_order", "pexp"))))
    return pd.concat([points, boundary], ignore_index=True)


register("boundary", BoundaryConfig, boundary_results)


def trace_boundary(model: EntryNet, threshold: float, view: list[float], grid: int) -> pd.DataFrame:
    """The decision boundary of a model on 2D inputs, traced on a ``grid`` x ``grid`` mesh over
    view = [x_min, x_max, y_min, y_max]: rows kind=boundary, segment, x0, x1."""
    x_min, x_max, y_min, y_max = map(float, view)
    gx, gy = np.linspace(x_min, x_max, grid), np.linspace(y_min, y_max, grid)
    mesh = torch.tensor(np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2), dtype=torch.float32)
    with torch.no_grad():
        values = score(model(mesh.to(next(model.parameters()).device))).reshape(len(gy), len(gx))
    level = threshold if model.outputs == 1 else 0.0
    segments = contourpy.contour_generator(gx, gy, values.double().cpu().numpy()).lines(level)
    frames = [pd.DataFrame(dict(kind="boundary", segment=i, x0=line[:, 0], x1=line[:, 1]))
              for i, line in enumerate(segments)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["kind", "segment", "x0", "x1"])
