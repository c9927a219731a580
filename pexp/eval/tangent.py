"""Tangent sample sensitivity of ReLU networks (paper TS): closed forms, active counts and the bound of eq. (2).

For a ReLU MLP f with weight layers W_1..W_L, pre-activations z_i = W_i h_{i-1} + b_i and h_i = relu(z_i)
(h_0 = x, f = z_L), the mixed derivative d^2 f_j / (d theta d x) is an N_theta x d_in matrix. Inside one activation
region its squared Frobenius norm splits over weight layers as

    ||d^2 f_j / dW_i dx||_F^2 = ||delta_i^j||^2 * ||d h_{i-1} / dx||_F^2,   delta_i^j = d f_j / d z_i,

and biases contribute nothing. Neither that matrix nor the input Jacobians are ever built: with the diagonal
masks D_i of active units, the Gram matrices K_i = (d h_i/dx)(d h_i/dx)^T = D_i W_i K_{i-1} W_i^T D_i (K_0 = I)
are n_i x n_i per input and ||d h_i/dx||_F^2 = tr K_i; the deltas follow from
delta_{i-1} = D_{i-1} W_i^T delta_i with delta_L^j = e_j.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.special import gammaln, hyp1f1
from torch import nn


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The affine layers, in order, of a ReLU MLP built by ``build_model`` with ``name: mlp``.

    Raises ValueError unless every block is a Linear layer followed by ReLU (Identity on the last block), with
    nothing after it and at most a Flatten before it.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise ValueError(f"{type(model).__name__} is not allowed: expected an EntryNet MLP with .blocks")
    for index, block in enumerate(blocks):
        activation = nn.ReLU if index < len(blocks) - 1 else nn.Identity
        if not (isinstance(block.affine, nn.Linear) and type(block.activation) is activation
                and type(block.after) is nn.Identity and type(block.before) in (nn.Identity, nn.Flatten)):
            found = " -> ".join(type(part).__name__ for part in (block.before, block.affine, block.activation,
                                                                 block.after))
            raise ValueError(f"block {index} ({found}) is not allowed: expected [Flatten] -> Linear -> "
                             f"{activation.__name__}, as in model.name=mlp")
    return [block.affine for block in blocks]


def _preactivations(layers: Sequence[nn.Linear], x: torch.Tensor) -> list[torch.Tensor]:
    """z_1..z_L for a batch of inputs (flattened to d_in features)."""
    h = x.flatten(1)
    if h.shape[1] != layers[0].in_features:
        raise ValueError(f"inputs of shape {tuple(x.shape[1:])} are not allowed: the first layer takes "
                         f"{layers[0].in_features} features")
    preactivations = []
    for layer in layers:
        preactivations.append(layer(h))
        h = torch.relu(preactivations[-1])
    return preactivations


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is not allowed: it must be >= 1")


def _sensitivity_batch(layers: Sequence[nn.Linear], x: torch.Tensor) -> torch.Tensor:
    """Per-layer squared Frobenius norms of d^2 f_j / dW_i dx for one batch: shape (B, L, outputs)."""
    preactivations = _preactivations(layers, x)
    masks = [(z > 0).to(z.dtype) for z in preactivations[:-1]]
    batch = x.shape[0]

    # ||d h_{i-1}/dx||_F^2 for i = 1..L via the Gram matrices K_i (None stands for K_0 = identity)
    jacobian_norms = [x.new_full((batch,), float(layers[0].in_features))]
    gram = None
    for position, (layer, mask) in enumerate(zip(layers[:-1], masks)):
        weight = layer.weight
        weight_gram = weight if gram is None else weight @ gram  # W_i K_{i-1}: (n_i, n_{i-1}) or (B, n_i, n_{i-1})
        jacobian_norms.append((mask * (weight_gram * weight).sum(-1)).sum(-1))  # tr(D_i W_i K_{i-1} W_i^T D_i)
        if position < len(masks) - 1:
            gram = mask[:, :, None] * (weight_gram @ weight.T) * mask[:, None, :]

    # ||delta_i^j||^2 for i = L..1: delta columns j, starting from the identity at the output layer
    outputs = layers[-1].out_features
    delta_norms = [x.new_ones((batch, outputs))]
    delta = None
    for layer, mask in zip(reversed(layers[1:]), reversed(masks)):
        back = layer.weight.T if delta is None else layer.weight.T @ delta  # W_{i+1}^T delta_{i+1}
        delta = mask[:, :, None] * back                                     # (B, n_i, outputs)
        delta_norms.append(delta.square().sum(1))
    delta_norms.reverse()

    return torch.stack([d * j[:, None] for d, j in zip(delta_norms, jacobian_norms)], dim=1)


def tangent_sensitivity(model: nn.Module, x: torch.Tensor, batch_size: int = 256,
                        per_layer: bool = False) -> torch.Tensor:
    """||d^2 f_j / (d theta d x)||_F^2 for every input x_n and output j, in closed form for a ReLU MLP.

    Returns shape (N, outputs), or (N, L, outputs) with ``per_layer`` (one row per weight layer, summing to the
    total), in the dtype and on the device of the model's weights. Derivatives at a kink follow autograd
    (relu'(0) = 0). Cost per input, for L >= 3 weight layers of width n: about (2L - 5) n^3 multiply-adds
    besides the forward pass.
    """
    _check_batch_size(batch_size)
    layers = linear_layers(model)
    weight = layers[0].weight
    with torch.no_grad():
        sensitivity = torch.cat([_sensitivity_batch(layers, x[i:i + batch_size].to(weight))
                                 for i in range(0, len(x), batch_size)])
    return sensitivity if per_layer else sensitivity.sum(1)


def _active_batch(layers: Sequence[nn.Linear], x: torch.Tensor) -> torch.Tensor:
    hidden = _preactivations(layers, x)[:-1]
    if not hidden:
        return torch.zeros(len(x), 0, dtype=torch.long, device=x.device)
    return torch.stack([(z > 0).sum(1) for z in hidden], dim=1)


def active_counts(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Number of positive hidden units per hidden layer for every input: a long tensor of shape (N, L - 1)."""
    _check_batch_size(batch_size)
    layers = linear_layers(model)
    weight = layers[0].weight
    with torch.no_grad():
        return torch.cat([_active_batch(layers, x[i:i + batch_size].to(weight))
                          for i in range(0, len(x), batch_size)])


def _depths(k: int | np.ndarray) -> np.ndarray:
    depths = np.asarray(k, dtype=float)
    bad = depths[(depths < 1) | (depths != np.round(depths))]
    if bad.size:
        raise ValueError(f"k={bad.flat[0]:g} is not allowed: depths must be whole numbers >= 1")
    return depths


def _positive(name: str, value: float | np.ndarray, allow_zero: bool = False) -> np.ndarray:
    values = np.asarray(value, dtype=float)
    bad = values[(values < 0) | ((values == 0) & (not allow_zero)) | np.isnan(values)]
    if bad.size:
        raise ValueError(f"{name}={bad.flat[0]:g} is not allowed: it must be {'>=' if allow_zero else '>'} 0")
    return values


def _log_psi_star(depths: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    kummer = hyp1f1(-(depths - 1) / 2, 0.5, -mu ** 2 / (2 * sigma ** 2))
    with np.errstate(divide="ignore"):  # Psi = 0 gives log 0 = -inf, i.e. psi* = 0
        return 2 * (depths - 1) * np.log(sigma) + 2 * np.log(np.abs(kummer))


def _as_result(values: np.ndarray) -> float | np.ndarray:
    return float(values) if values.ndim == 0 else values


def psi_star(k: int | np.ndarray, mu: float | np.ndarray, sigma: float | np.ndarray) -> float | np.ndarray:
    """psi*(k, mu, sigma) = sigma^(2(k-1)) Psi(-(k-1)/2, 1/2, -mu^2 / (2 sigma^2))^2 (Psi: Kummer's 1F1), the
    active-count factor of eqs. (2) and (6); arguments broadcast like numpy arrays."""
    depths, sigma = _depths(k), _positive("sigma", sigma)
    return _as_result(np.exp(_log_psi_star(depths, np.asarray(mu, dtype=float), sigma)))


def sensitivity_bound(k: int | np.ndarray, n_theta: float | np.ndarray, d_in: float | np.ndarray,
                      mu: float | np.ndarray, sigma: float | np.ndarray,
                      w_max: float | Sequence[float]) -> float | np.ndarray:
    """Bound(k) of eq. (2) on the squared tangent sensitivity of a depth-k ReLU network:

        N_theta d_in sigma^(2(k-1)) 2^(k-1) / k^(2k) Gamma(k/2)^2 / pi Psi(-(k-1)/2, 1/2, -mu^2/(2 sigma^2))^2
        (prod_i w_max_i)^2,

    with (mu, sigma) the mean and standard deviation of the active counts. ``w_max`` is either one number, the
    largest weight of every layer (the product is w_max^k), or a sequence of per-layer values of which the first
    k are multiplied (it must hold at least max(k) entries). ``k`` (whole numbers >= 1), ``n_theta``, ``d_in``,
    ``mu`` and ``sigma`` broadcast like numpy arrays. Evaluated in log space, so large k neither overflows nor
    turns into nan; a float for scalar arguments, else an array.
    """
    depths = _depths(k)
    n_theta, d_in = _positive("n_theta", n_theta), _positive("d_in", d_in)
    sigma, mu = _positive("sigma", sigma), np.asarray(mu, dtype=float)
    if np.ndim(w_max) == 0:
        with np.errstate(divide="ignore"):
            log_w_product = depths * np.log(_positive("w_max", w_max, allow_zero=True))
    else:
        per_layer = _positive("w_max", np.asarray(w_max, dtype=float).ravel(), allow_zero=True)
        if per_layer.size < depths.max():
            raise ValueError(f"w_max with {per_layer.size} layers is not allowed for k={depths.max():g}: it needs "
                             "one value per layer, at least k of them")
        with np.errstate(divide="ignore"):
            log_w_product = np.cumsum(np.log(per_layer))[depths.astype(int) - 1]
    log_bound = (np.log(n_theta) + np.log(d_in) + (depths - 1) * np.log(2) - 2 * depths * np.log(depths)
                 + 2 * gammaln(depths / 2) - np.log(np.pi) + _log_psi_star(depths, mu, sigma) + 2 * log_w_product)
    return _as_result(np.exp(log_bound))


# --- Estimating the test loss and accuracy from the training ones (eqs. (5)-(7)), as pure functions ---------

ESTIMATORS = ("eq5", "eq6", "eq7")
ANCHORS = ("previous", "initial")
ACCURACY_MODES = ("error", "accuracy")


def log_weight_product(model: nn.Module) -> float:
    """log prod_i w_max_i over the weight layers, w_max_i = max |W_i| (the layer-wise l_inf norm of eq. (5))."""
    return float(sum(torch.log(layer.weight.detach().abs().max()).double() for layer in linear_layers(model)))


def membership_weights(log_values: np.ndarray, log_reference: np.ndarray, temperature: float = 1.0
                       ) -> np.ndarray:
    """Sigmoid membership probabilities sigma((log s - m) / (temperature * sd)), with (m, sd) the mean and standard
    deviation of ``log_reference`` (the training inputs' log sensitivities): our stand-in for eq. (4)."""
    spread = float(np.std(log_reference)) * temperature or 1.0
    return 1.0 / (1.0 + np.exp(-(np.asarray(log_values, dtype=float) - float(np.mean(log_reference))) / spread))


def change_over_epochs(ratio: np.ndarray) -> np.ndarray:
    """q(t) = r(t) / r(t-1) of a per-epoch test/train sensitivity ratio r (eqs. (6), (7)); q(0) = nan."""
    ratio = np.asarray(ratio, dtype=float)
    return np.concatenate([[np.nan], ratio[1:] / ratio[:-1]])


def weight_change(log_products: np.ndarray) -> np.ndarray:
    """Eq. (5) in log form: q(t) = log prod_i w_max_i(t-1) / log prod_i w_max_i(t); q(0) = nan. Above 1 when the
    weights grow (while the product is below 1, as in every network here)."""
    logs = np.asarray(log_products, dtype=float)
    return np.concatenate([[np.nan], logs[:-1] / logs[1:]])


def estimate_test(train: np.ndarray, test: np.ndarray, change: np.ndarray, anchor: str = "previous") -> np.ndarray:
    """Estimated test value per epoch from the training value, assuming the test/train ratio g = test / train
    moves like the sensitivity: g(t) = g(t-1) q(t).

    ``anchor='previous'``: est(t) = train(t) g(t-1) q(t) (one epoch ahead; g(t-1) measured);
    ``anchor='initial'``: est(t) = train(t) g(0) q(1) ... q(t) (only the init measured). est(0) = nan.
    """
    if anchor not in ANCHORS:
        raise ValueError(f"anchor={anchor!r} is not allowed: choose one of {', '.join(ANCHORS)}")
    train, test, change = (np.asarray(a, dtype=float) for a in (train, test, change))
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = test / train
        if anchor == "previous":
            estimate = train[1:] * gap[:-1] * change[1:]
        else:
            estimate = train[1:] * gap[0] * np.cumprod(change[1:])
    return np.concatenate([[np.nan], estimate])


def estimate_accuracy(train_accuracy: np.ndarray, test_accuracy: np.ndarray, change: np.ndarray,
                      anchor: str = "previous", mode: str = "error") -> np.ndarray:
    """Estimated test accuracy. ``mode='error'``: the error rate (the 0-1 loss) is estimated like the loss,
    accuracy = 1 - estimated error; ``mode='accuracy'``: the accuracy itself, moving against the sensitivity
    (q -> 1 / q)."""
    if mode not in ACCURACY_MODES:
        raise ValueError(f"mode={mode!r} is not allowed: choose one of {', '.join(ACCURACY_MODES)}")
    train_accuracy, test_accuracy = np.asarray(train_accuracy, float), np.asarray(test_accuracy, float)
    if mode == "error":
        return 1 - estimate_test(1 - train_accuracy, 1 - test_accuracy, change, anchor)
    return estimate_test(train_accuracy, test_accuracy, 1 / np.asarray(change, float), anchor)


def sensitivity_changes(stats: pd.DataFrame, depth: int, weighted: bool = False) -> dict[str, np.ndarray]:
    """q(t) of each estimator from a per-epoch statistics table (columns log_w_product, mu_train, sigma_train,
    mu_test, sigma_test, sens_train, sens_test and, with ``weighted``, sens_train_weighted / sens_test_weighted):
    eq5 the l_inf weight norms, eq6 psi*(depth, mu, sigma) on test vs train, eq7 the mean ||Sens||_F^2 test vs train."""
    psi_test = psi_star(depth, stats["mu_test"].to_numpy(), stats["sigma_test"].to_numpy())
    psi_train = psi_star(depth, stats["mu_train"].to_numpy(), stats["sigma_train"].to_numpy())
    suffix = "_weighted" if weighted else ""
    return dict(eq5=weight_change(stats["log_w_product"].to_numpy()),
                eq6=change_over_epochs(np.asarray(psi_test) / np.asarray(psi_train)),
                eq7=change_over_epochs(stats[f"sens_test{suffix}"].to_numpy() / stats[f"sens_train{suffix}"].to_numpy()))


def add_estimates(stats: pd.DataFrame, depth: int, anchor: str = "previous", accuracy: str = "error",
                  weighted: bool = False) -> pd.DataFrame:
    """``stats`` plus columns q_<eq>, loss_<eq> and accuracy_<eq> (the estimated test loss and accuracy) for eqs.
    (5), (6), (7), from columns train_loss, test_loss, train_accuracy, test_accuracy and those of
    :func:`sensitivity_changes`; rows sorted by epoch, one per epoch from 0 without gaps."""
    stats = stats.sort_values("epoch").reset_index(drop=True)
    if not np.array_equal(stats["epoch"].to_numpy(), np.arange(len(stats))):
        raise ValueError("the estimators need one row per epoch 0, 1, 2, ... without gaps")
    out = stats.copy()
    for name, change in sensitivity_changes(stats, depth, weighted).items():
        out[f"q_{name}"] = change
        out[f"loss_{name}"] = estimate_test(stats["train_loss"], stats["test_loss"], change, anchor)
        out[f"accuracy_{name}"] = estimate_accuracy(stats["train_accuracy"], stats["test_accuracy"], change,
                                                    anchor, accuracy)
    return out


def mean_absolute_errors(estimates: pd.DataFrame) -> pd.DataFrame:
    """Table 2: per estimator, the mean absolute error over the epochs that have an estimate (t >= 1) of the
    test cross-entropy and of the test accuracy: columns estimator, mae_loss, mae_accuracy, epochs."""
    rows = []
    for name in ESTIMATORS:
        loss_error = (estimates[f"loss_{name}"] - estimates["test_loss"]).abs()
        accuracy_error = (estimates[f"accuracy_{name}"] - estimates["test_accuracy"]).abs()
        rows.append(dict(estimator=name, mae_loss=float(loss_error.mean()), mae_accuracy=float(accuracy_error.mean()),
                         epochs=int(loss_error.notna().sum())))
    return pd.DataFrame(rows)


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000
                      ) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on (x, y)."""
    weight = next(model.parameters())
    total, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        logits = model(x[i:i + batch_size].to(weight))
        targets = y[i:i + batch_size].to(weight.device)
        total += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
        correct += int((logits.argmax(1) == targets).sum())
    return total / len(y), correct / len(y)


def epoch_statistics(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                     test: tuple[torch.Tensor, torch.Tensor], train_subset: torch.Tensor,
                     test_subset: torch.Tensor, batch_size: int = 256, temperature: float = 1.0) -> dict:
    """What the estimators need from one epoch's weights: the train / test cross-entropy and accuracy (on the
    given sets), the mean and standard deviation of the per-layer active counts (pooled over hidden layers and
    inputs; ``total_`` for all hidden units) and the mean ||Sens(x)||_F^2 (summed over outputs; also weighted by
    :func:`membership_weights`) on the two input subsets, and log prod_i w_max_i."""
    import time

    row: dict = {}
    for name, (x, y) in (("train", train), ("test", test)):
        row[f"{name}_loss"], row[f"{name}_accuracy"] = loss_and_accuracy(model, x, y)
    started = time.perf_counter()
    sens = {name: tangent_sensitivity(model, subset, batch_size).sum(1).double().cpu().numpy()
            for name, subset in (("train", train_subset), ("test", test_subset))}
    row["seconds_sensitivity"] = time.perf_counter() - started
    with np.errstate(divide="ignore"):
        log_train = np.log(sens["train"])
        for name, values in sens.items():
            counts = active_counts(model, train_subset if name == "train" else test_subset).double()
            row[f"mu_{name}"], row[f"sigma_{name}"] = float(counts.mean()), float(counts.std())
            totals = counts.sum(1)
            row[f"total_mu_{name}"], row[f"total_sigma_{name}"] = float(totals.mean()), float(totals.std())
            row[f"sens_{name}"] = float(values.mean())
            weights = membership_weights(np.log(values), log_train[np.isfinite(log_train)], temperature)
            row[f"sens_{name}_weighted"] = float((weights * values).sum() / weights.sum())
    row["log_w_product"] = log_weight_product(model)
    row["n_sens_train"], row["n_sens_test"] = len(train_subset), len(test_subset)
    return row
