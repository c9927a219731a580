"""Run an evaluator on a finished training run; results are cached beside the run, keyed by the eval config."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from pexp.config import ConfigError, resolve_device, validate_eval
from pexp.data import Dataset, Split, load_dataset
from pexp.eval.geometry import cumulative_explained_variance, offmanifold_distance
from pexp.eval.margin import minimal_perturbation
from pexp.eval.tangent import active_counts, add_estimates, epoch_statistics
from pexp.models import AsLogits, EntryNet, score
from pexp.runs import RunDir, config_hash, run_identity, write_csv, write_json
from pexp.train.loop import decision_threshold, load_trained

NOT_HASHED = ("batch_size", "progress")
RESULTS = "results.csv"


def eval_dir(run: RunDir, eval_cfg: DictConfig) -> RunDir:
    """``<run>/eval/<name>-<hash of the eval config>``."""
    tree = {k: v for k, v in OmegaConf.to_container(eval_cfg, resolve=True).items() if k not in NOT_HASHED}
    return RunDir(run / "eval" / f"{eval_cfg.name}-{config_hash(tree)}")


def run_of(out: RunDir) -> RunDir:
    """The run an evaluation directory (:func:`eval_dir`) belongs to."""
    return RunDir(out.path.parent.parent)


def _search_settings(eval_cfg: DictConfig, progress: bool) -> dict:
    return dict(eps_max=eval_cfg.eps_max, resolution=eval_cfg.resolution, steps=eval_cfg.steps,
                rel_stepsize=eval_cfg.rel_stepsize, random_start=eval_cfg.random_start,
                batch_size=eval_cfg.batch_size, progress=progress)


def _subset(split: Split, n: int | None, seed: int) -> tuple[Split, torch.Tensor]:
    if n is None or n >= len(split):
        index = torch.arange(len(split))
    else:
        index = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return split.subset(index), index


def margin_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                   progress: bool) -> pd.DataFrame:
    """Margins (``minimal_perturbation``) of a random train subset and of the test set:
    columns split, index, target, margin, lossless."""
    data = load_dataset(cfg.data)
    logits = AsLogits(model, decision_threshold(cfg.loss))
    frames = []
    for name, split, n in (("train", data.train, eval_cfg.n_train), ("test", data.test, eval_cfg.n_test)):
        part = out / f"{name}.csv"  # each split is kept as soon as it is done, so an interruption loses less
        if not part.exists():
            subset, index = _subset(split, n, int(eval_cfg.seed))
            torch.manual_seed(int(eval_cfg.seed))
            started = time.perf_counter()
            margins = minimal_perturbation(logits, subset.x, subset.y, norm=eval_cfg.norm,
                                           **_search_settings(eval_cfg, progress))
            seconds = time.perf_counter() - started
            lossless = subset.extras.get("lossless", torch.ones(len(subset), dtype=torch.bool))
            write_csv(part, pd.DataFrame(dict(split=name, index=index.numpy(), target=subset.y.numpy(),
                                              margin=margins.numpy(), lossless=lossless.numpy())))
            print(f"[pexp] margins of {len(subset)} {name} points of {run_of(out).path}: median "
                  f"{float(margins.median()):.4f} ({seconds:.1f}s)")
        frames.append(pd.read_csv(part))
    return pd.concat(frames, ignore_index=True)


def boundary_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                     progress: bool) -> pd.DataFrame:
    """2D toys: rows ``kind=point`` (training points: x0, x1, target, margin = Euclidean distance to the boundary,
    0 when misclassified) and rows ``kind=boundary`` (the boundary traced on the grid: segment, x0, x1)."""
    data = load_dataset(cfg.data)
    threshold = decision_threshold(cfg.loss)
    x, y = data.train.x, data.train.y
    if x.shape[1] != 2:
        raise ConfigError(f"eval=boundary is for 2D data: data.name={cfg.data.name!r} has {x.shape[1]} features")
    if len(model.blocks) == 1:  # affine model: the exact distance to its hyperplane
        layer = model.blocks[0].affine
        w = (layer.weight[0] if layer.out_features == 1 else layer.weight[1] - layer.weight[0]).detach().double()
        b = float(layer.bias[0] if layer.out_features == 1 else layer.bias[1] - layer.bias[0]) - threshold
        signed = (x.double() @ w + b) / w.norm() * torch.where(y == 1, 1.0, -1.0).double()
        margins = signed.clamp(min=0)
    else:
        torch.manual_seed(int(eval_cfg.seed))
        margins = minimal_perturbation(AsLogits(model, threshold), x, y, norm="l2", bounds=(-1e6, 1e6),
                                       **_search_settings(eval_cfg, progress))
    boundary = trace_boundary(model, threshold, eval_cfg.view, int(eval_cfg.grid))
    points = pd.DataFrame(dict(kind="point", index=np.arange(len(y)), x0=x[:, 0].numpy(), x1=x[:, 1].numpy(),
                               target=y.numpy(), margin=margins.double().numpy()))
    return pd.concat([points, boundary], ignore_index=True)


def trace_boundary(model: EntryNet, threshold: float, view: list[float], grid: int) -> pd.DataFrame:
    """The decision boundary of a model on 2D inputs, traced on a ``grid`` x ``grid`` mesh over
    view = [x_min, x_max, y_min, y_max]: rows kind=boundary, segment, x0, x1."""
    import contourpy

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
    threshold = decision_threshold(cfg.loss)
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


def pca_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                progress: bool) -> pd.DataFrame:  # noqa: ARG001
    """Cumulative explained variance of the principal components of each hidden layer's activations over the
    training set (all min(n, width) of them): columns layer, name, width, component, cumulative."""
    data = load_dataset(cfg.data)
    subset, _ = _subset(data.train, eval_cfg.n_train, int(eval_cfg.seed))
    device = next(model.parameters()).device
    frames = []
    for layer, name in enumerate(model.layer_names[:-1]):
        with torch.no_grad():  # one layer at a time: at most n x width activations held (10,000 x 4704 floats)
            activations = torch.cat([model.hidden_activations(chunk.to(device))[layer].cpu()
                                     for chunk in subset.x.split(int(eval_cfg.batch_size))])
        cumulative = cumulative_explained_variance(activations)
        frames.append(pd.DataFrame(dict(layer=layer + 1, name=name, width=activations.shape[1],
                                        component=np.arange(1, len(cumulative) + 1), cumulative=cumulative.numpy())))
    return pd.concat(frames, ignore_index=True)


def projected_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                      progress: bool) -> pd.DataFrame:  # noqa: ARG001
    """offmanifold-fig4: for ``n_points`` random training points, the l2 size of the smallest perturbation PGD
    finds with the perturbation unrestricted, restricted to the data subspace, or to its orthogonal complement:
    columns mode, index, target, distance (inf: none found up to eps_max)."""
    data = load_dataset(cfg.data)
    if data.subspace is None:
        raise ConfigError(f"eval=projected needs a data set with a known subspace: data.name={cfg.data.name!r}")
    subset, index = _subset(data.train, eval_cfg.n_points, int(eval_cfg.seed))
    logits = AsLogits(model, decision_threshold(cfg.loss))
    directions = {"unrestricted": None, "subspace": data.subspace, "complement": complement_basis(data.subspace)}
    frames = []
    for mode in eval_cfg.modes:
        torch.manual_seed(int(eval_cfg.seed))
        distance = minimal_perturbation(logits, subset.x, subset.y, norm="l2", bounds=(-1e6, 1e6),
                                        directions=directions[mode], **_search_settings(eval_cfg, progress))
        frames.append(pd.DataFrame(dict(mode=mode, index=index.numpy(), target=subset.y.numpy(),
                                         distance=distance.double().numpy())))
    return pd.concat(frames, ignore_index=True)


def active_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                   progress: bool) -> pd.DataFrame:  # noqa: ARG001
    """Paper TS: the number of positive hidden units of the final model per input, per hidden layer and in
    total, on a random train subset and the test set: columns split, index, layer1..layerL, total."""
    data = load_dataset(cfg.data)
    device = next(model.parameters()).device
    frames = []
    for name, split, n in (("train", data.train, eval_cfg.n_train), ("test", data.test, eval_cfg.n_test)):
        subset, index = _subset(split, n, int(eval_cfg.seed))
        counts = active_counts(model, subset.x.to(device), int(eval_cfg.batch_size)).cpu().numpy()
        frame = pd.DataFrame(counts, columns=[f"layer{i + 1}" for i in range(counts.shape[1])])
        frames.append(frame.assign(split=name, index=index.numpy(), total=counts.sum(1)))
    return pd.concat(frames, ignore_index=True)[["split", "index", *frames[0].columns[:-3], "total"]]


def tangent_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                    progress: bool) -> pd.DataFrame:
    """Paper TS, eqs. (5)-(7): per epoch state (``train.keep_states``) the train / test cross-entropy and accuracy,
    active-count and sensitivity statistics (:func:`epoch_statistics`), then each estimator's test loss and
    accuracy (:func:`add_estimates`). Finished epochs are kept in ``epochs.csv``, so an interruption resumes."""
    from pexp.train.loop import state_path

    run = run_of(out)
    epochs = int(cfg.train.epochs)
    missing = [epoch for epoch in range(epochs + 1) if not state_path(run, epoch).exists()]
    if missing:
        raise ConfigError(f"eval=tangent needs every epoch's weights: run {run.path} has no "
                          f"{state_path(run, missing[0]).relative_to(run.path)} (train it with train.keep_states=true)")
    data = load_dataset(cfg.data)
    train_subset, _ = _subset(data.train, eval_cfg.n_train, int(eval_cfg.seed))
    test_subset, _ = _subset(data.test, eval_cfg.n_test, int(eval_cfg.seed) + 1)
    loss_train, _ = _subset(data.train, eval_cfg.get("n_loss"), int(eval_cfg.seed) + 2)
    device = next(model.parameters()).device
    part = out / "epochs.csv"
    rows = pd.read_csv(part).to_dict("records") if part.exists() else []
    for epoch in tqdm(range(len(rows), epochs + 1), desc="tangent statistics", unit="epoch", disable=not progress):
        model.load_state_dict(torch.load(state_path(run, epoch), map_location=device, weights_only=True))
        row = epoch_statistics(model, (loss_train.x, loss_train.y), (data.test.x, data.test.y),
                               train_subset.x, test_subset.x, int(eval_cfg.batch_size),
                               float(eval_cfg.membership_temperature))
        rows.append(dict(epoch=epoch, **row))
        write_csv(part, pd.DataFrame(rows))
    stats = pd.DataFrame(rows)
    depth = int(eval_cfg.depth or len(model.blocks))
    seconds = stats["seconds_sensitivity"].sum() / (stats["n_sens_train"] + stats["n_sens_test"]).sum() * 1000
    print(f"[pexp] tangent sensitivity: {seconds:.2f} s per 1,000 inputs ({out.path})")
    return add_estimates(stats, depth, eval_cfg.anchor, eval_cfg.accuracy, bool(eval_cfg.membership_weights))


EVALUATORS: dict[str, Callable[..., pd.DataFrame]] = {"margin": margin_results, "boundary": boundary_results,
                                                      "pca": pca_results, "offmanifold": offmanifold_results,
                                                      "projected": projected_results, "active": active_results,
                                                      "tangent": tangent_results}


def _cached(out: RunDir, eval_cfg: DictConfig, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """``out/results.csv`` when finished, else ``compute()`` under the directory's lock, saved atomically; the
    marker records the wall time of the session that finished it (make bench reads it)."""
    if not out.complete:
        with out.lock():
            if not out.complete:
                started = time.perf_counter()
                write_csv(out / RESULTS, compute())
                write_json(out / "eval.json", OmegaConf.to_container(eval_cfg, resolve=True))
                out.mark_complete(dict(seconds=time.perf_counter() - started))
    return pd.read_csv(out / RESULTS)


def evaluate(run: RunDir, eval_cfg: DictConfig, device: str = "auto", progress: bool = True) -> pd.DataFrame:
    """The evaluator ``eval_cfg.name`` on a finished run, computed once and cached in
    ``<run>/eval/<name>-<hash>/results.csv``."""
    validate_eval(OmegaConf.create({"eval": eval_cfg}))
    out = eval_dir(run, eval_cfg)

    def compute() -> pd.DataFrame:
        model, cfg = load_trained(run, resolve_device(device))
        return EVALUATORS[eval_cfg.name](model, cfg, eval_cfg, out, progress)

    return _cached(out, eval_cfg, compute)


def dataset_pca_results(cfg: DictConfig, eval_cfg: DictConfig) -> pd.DataFrame:
    """offmanifold-fig1: cumulative explained variance of the principal components of a whole data set's
    ``eval_cfg.split`` (flattened, centred; float64 covariance accumulated in batches): columns component,
    cumulative."""
    data = load_dataset(cfg.data)
    split = data.train if eval_cfg.split == "train" else data.test
    cumulative = cumulative_explained_variance(split.x, batch_size=int(eval_cfg.batch_size))
    return pd.DataFrame(dict(component=np.arange(1, len(cumulative) + 1), cumulative=cumulative.numpy(),
                             n=len(split), data=data.source))


DATA_EVALUATORS: dict[str, Callable[[DictConfig, DictConfig], pd.DataFrame]] = {"dataset_pca": dataset_pca_results}


def evaluate_data(cfg: DictConfig) -> pd.DataFrame:
    """An evaluator of a data set alone, no model (:data:`DATA_EVALUATORS`). Cached like :func:`evaluate`, under
    ``<runs_dir>/<run_name>/<hash of the data config>/eval/<name>-<hash>/``."""
    validate_eval(cfg)
    if cfg.eval.name not in DATA_EVALUATORS:
        raise ConfigError(f"eval.name={cfg.eval.name!r} needs a trained model; data-only evaluators: "
                          f"{', '.join(DATA_EVALUATORS)}")
    run = RunDir(Path(cfg.paths.runs_dir) / str(cfg.run_name) / config_hash(run_identity(cfg)["data"]))
    return _cached(eval_dir(run, cfg.eval), cfg.eval, lambda: DATA_EVALUATORS[cfg.eval.name](cfg, cfg.eval))


def find_run(cfg: DictConfig) -> RunDir:
    """``run=<dir>``: that run; ``run=<experiment name>`` or ``experiment=...``: the run of that config
    (trained first when it is missing)."""
    from pexp.train.loop import train

    if cfg.run is not None and Path(str(cfg.run)).is_dir():
        return RunDir(cfg.run)
    return train(cfg)
