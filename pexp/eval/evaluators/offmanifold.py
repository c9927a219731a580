"""``eval=offmanifold`` (toys with a known subspace) and ``eval=projected`` (offmanifold-fig4)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from pexp.errors import ConfigError
from pexp.data import Dataset, load_dataset
from pexp.eval.evaluators.boundary import trace_boundary
from pexp.eval.evaluators.common import SplitName, register
from pexp.eval.geometry import offmanifold_distance
from pexp.eval.margin import SearchKeys, SearchSettings
from pexp.losses import Loss
from pexp.models import AsLogits, EntryNet
from pexp.runs import RunDir
from pexp.schema import UNSET, ScaleKeys, choices, cross_check, has_schema, integer, is_number, number, plain_list


@dataclass
class OffmanifoldConfig(ScaleKeys):
    """eval=offmanifold (conf/eval/offmanifold.yaml)."""

    name: str = "offmanifold"
    max_distance: Any = number(3.0, gt=0)  # the scan's reach along the normal
    tolerance: Any = number(1e-3, gt=0)  # the bisection's
    view: Any = UNSET  # the traced region of 2D data (the mesh of the data plane's coordinates for 3D data)
    grid: int = integer(400, ge=2)  # grid points per axis of the trace
    surface_grid: Optional[int] = integer(UNSET, ge=2, null=True)  # 3D data on a plane: the boundary's height
    batch_size: int = integer(65536, ge=1)


class ProjectionMode(StrEnum):
    """Where eval=projected's perturbations may go: anywhere, within the data subspace, or orthogonal to it."""

    unrestricted = "unrestricted"
    subspace = "subspace"
    complement = "complement"


@dataclass
class ProjectedConfig(SearchKeys):
    """eval=projected (conf/eval/projected.yaml): the search settings (:data:`pexp.eval.margin.SearchKeys`), the
    modes and the points (``modes`` and ``bounds``: check_projected)."""

    name: str = "projected"
    modes: Any = UNSET  # a non-empty list of ProjectionMode names
    n_points: int = integer(200, ge=1)  # the first n_points of split
    split: Optional[SplitName] = UNSET  # default train
    bounds: Any = UNSET  # [low, high]: the box inputs are clipped to; null (default): none
    seed: int = integer(0, ge=0)


@cross_check("eval")
def check_projected(cfg: Any) -> None:
    if not has_schema(cfg.eval, ProjectedConfig):
        return
    bounds = plain_list(cfg.eval.get("bounds"))
    if bounds is not None and not (isinstance(bounds, list) and len(bounds) == 2 and all(is_number(b) for b in bounds)
                                   and bounds[0] < bounds[1]):
        raise ConfigError(f"eval.bounds={bounds!r} is not "
                          f"allowed: must be null (no box) or [low, high] with low < high")
    modes = plain_list(cfg.eval.get("modes"))
    if not isinstance(modes, list) or not modes or any(mode not in list(ProjectionMode) for mode in modes):
        raise ConfigError(f"eval.modes={modes} is not allowed: must be a non-empty list of {choices(ProjectionMode)}")


def complement_basis(subspace: torch.Tensor) -> torch.Tensor:
    """Orthonormal rows spanning the orthogonal complement of the rows of ``subspace`` (k, d)."""
    _, _, vh = torch.linalg.svd(subspace.double(), full_matrices=True)
    return vh[subspace.shape[0]:].to(subspace.dtype)


def offmanifold_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                        progress: bool) -> pd.DataFrame:  # noqa: ARG001
    """Toys with a known subspace: each training point's distance to the boundary along the normal of the data
    subspace (to ``tolerance``), plus the boundary trace when the data are 2D: rows kind=point / boundary."""
    data = load_dataset(cfg.data)
    if data.subspace is None:
        raise ConfigError(f"eval=offmanifold needs a data set with a known subspace: data.name={cfg.data.name!r}")
    threshold = Loss.from_config(cfg.loss).decision_threshold
    x, y = data.train.x, data.train.y
    distance = offmanifold_distance(model, x, complement_basis(data.subspace), max_distance=eval_cfg.max_distance,
                                    tolerance=eval_cfg.tolerance, threshold=threshold)
    points = pd.DataFrame(dict(kind="point", index=np.arange(len(y)), target=y.numpy(), distance=distance.numpy(),
                               **{f"x{i}": x[:, i].numpy() for i in range(x.shape[1])}))
    if x.shape[1] == 2:
        return pd.concat([points, trace_boundary(model, threshold, eval_cfg.view, int(eval_cfg.grid))],
                         ignore_index=True)
    if x.shape[1] == 3 and len(data.subspace) == 2 and eval_cfg.get("surface_grid"):
        return pd.concat([points, boundary_height(model, data, eval_cfg, threshold)], ignore_index=True)
    return points


def boundary_height(model: EntryNet, data: Dataset, eval_cfg: DictConfig, threshold: float) -> pd.DataFrame:
    """3D data on a plane: on a ``surface_grid`` x ``surface_grid`` mesh of the data plane (``view`` in the plane's
    own coordinates), the distance along the plane's normal to the nearest sign change, and on which side it is
    (+1: along the normal, -1: against it; 0 where nothing is crossed). Rows kind=surface: u, v, distance, side."""
    basis, normal = data.subspace.double(), complement_basis(data.subspace).double()[0]
    origin = (data.train.x.double() - data.train.x.double() @ basis.T @ basis)[0]  # the plane's offset
    low_u, high_u, low_v, high_v = map(float, eval_cfg.view)
    side = int(eval_cfg.surface_grid)
    u, v = torch.meshgrid(torch.linspace(low_u, high_u, side, dtype=torch.float64),
                          torch.linspace(low_v, high_v, side, dtype=torch.float64), indexing="ij")
    plane = origin + u.reshape(-1, 1) * basis[0] + v.reshape(-1, 1) * basis[1]
    settings = dict(max_distance=eval_cfg.max_distance, tolerance=eval_cfg.tolerance, threshold=threshold)
    up = offmanifold_distance(model, plane.float(), normal.float(), **settings, one_sided=True)
    down = offmanifold_distance(model, plane.float(), -normal.float(), **settings, one_sided=True)
    distance = torch.minimum(up, down)
    direction = torch.where(torch.isinf(distance), 0, torch.where(up <= down, 1, -1))
    return pd.DataFrame(dict(kind="surface", u=u.flatten().numpy(), v=v.flatten().numpy(),
                             distance=distance.numpy(), side=direction.numpy()))


NO_BOX = (-math.inf, math.inf)  # eval.bounds=null: the inputs are not clipped


def projected_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                      progress: bool) -> pd.DataFrame:  # noqa: ARG001
    """offmanifold-fig4: for the first ``n_points`` points of ``split`` (train | test), the l2 size of the
    perturbation the margin search (:class:`pexp.eval.margin.SearchSettings` of the eval config; the
    authors' walk in conf/eval/projected.yaml) needs to flip the label, with the perturbation unrestricted,
    restricted to the data subspace, or to its orthogonal complement. Columns: mode, index, target, distance
    (0: misclassified already; inf: not flipped within the search, censored), misclassified, censored, end (the
    walk: the norm where it ended, the distance for a flipped point and where its last step left a censored one;
    NaN for a bisecting search)."""
    data = load_dataset(cfg.data)
    if data.subspace is None:
        raise ConfigError(f"eval=projected needs a data set with a known subspace: data.name={cfg.data.name!r}")
    split = data.test if eval_cfg.get("split", "train") == "test" else data.train
    index = torch.arange(min(int(eval_cfg.n_points), len(split)))
    points = split.subset(index)
    logits = AsLogits(model, Loss.from_config(cfg.loss).decision_threshold)
    directions = {"unrestricted": None, "subspace": data.subspace, "complement": complement_basis(data.subspace)}
    bounds = NO_BOX if eval_cfg.get("bounds") is None else tuple(map(float, eval_cfg.bounds))
    search = SearchSettings.from_config(eval_cfg, norm="l2", bounds=bounds, progress=progress).build()
    with torch.no_grad():  # every point misclassified already (an untrained smoke net): all distances are 0
        nothing_to_attack = bool((logits(points.x).argmax(1) != points.y).all())
    frames = []
    for mode in eval_cfg.modes:
        torch.manual_seed(int(eval_cfg.seed))
        found = dict(margin=torch.zeros(len(points)), end=torch.zeros(len(points))) if nothing_to_attack else \
            search(logits, points.x, points.y, directions=directions[mode], details=True)
        distance = found["margin"].double()
        frames.append(pd.DataFrame(dict(mode=mode, index=index.numpy(), target=points.y.numpy(),
                                        distance=distance.numpy(), misclassified=(distance == 0).numpy(),
                                        censored=torch.isinf(distance).numpy(), end=found["end"].double().numpy())))
    return pd.concat(frames, ignore_index=True)


register("offmanifold", OffmanifoldConfig, offmanifold_results)
register("projected", ProjectedConfig, projected_results)
