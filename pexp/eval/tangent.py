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

import time
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.special import gamma, gammaln, logsumexp, poch
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


def _first_factor(layers: Sequence[nn.Linear]) -> torch.Tensor:
    """R with W_1 W_1^T = R^T R (reduced QR of W_1^T): the factor of the first Gram matrix, shape (r, n_1)."""
    weight = layers[0].weight
    return torch.linalg.qr(weight.T.double(), mode="r").R.to(weight.dtype)


def _sensitivity_batch(layers: Sequence[nn.Linear], x: torch.Tensor, factor: torch.Tensor,
                       preactivations: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Per-layer squared Frobenius norms of d^2 f_j / dW_i dx for one batch: shape (B, L, outputs).

    ``factor`` is :func:`_first_factor`; the Gram matrices K_i = (d h_i/dx)(d h_i/dx)^T are kept as factors
    K_i = F_i F_i^T, F_1 = D_1 R^T and F_i = D_i W_i F_{i-1}, so ||d h_i/dx||_F^2 = ||F_i||_F^2 and each hidden
    layer after the first costs one (r x n) @ (n x n) product per input (stored transposed: one large GEMM)."""
    preactivations = _preactivations(layers, x) if preactivations is None else preactivations
    masks = [(z > 0).to(z.dtype) for z in preactivations[:-1]]
    batch = x.shape[0]

    # ||d h_{i-1}/dx||_F^2 for i = 1..L
    jacobian_norms = [x.new_full((batch,), float(layers[0].in_features))]
    if masks:
        factor_t = factor[None] * masks[0][:, None, :]                        # F_1^T: (B, r, n_1)
        jacobian_norms.append(factor_t.square().sum((1, 2)))
        for layer, mask in zip(layers[1:-1], masks[1:]):
            factor_t = (factor_t @ layer.weight.T) * mask[:, None, :]          # F_i^T = F_{i-1}^T W_i^T D_i
            jacobian_norms.append(factor_t.square().sum((1, 2)))

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
    (relu'(0) = 0). Cost per input, for L >= 3 weight layers of width n: about (L - 2) n^3 multiply-adds
    besides the forward pass.
    """
    _check_batch_size(batch_size)
    layers = linear_layers(model)
    weight = layers[0].weight
    with torch.no_grad():
        factor = _first_factor(layers)
        sensitivity = torch.cat([_sensitivity_batch(layers, x[i:i + batch_size].to(weight), factor)
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


MAX_SERIES_TERMS = 2_000_000  # beyond this the even-k Kummer series gives way to its (then exact) asymptotic form


def _log_kummer_odd(m: int, z: float) -> float:
    """log 1F1(-m; 1/2; -z) for a whole m >= 0: a polynomial of degree m in z whose terms
    (-m)_n / (1/2)_n (-z)^n / n! are all >= 0, summed in log space."""
    n = np.arange(m + 1)
    with np.errstate(divide="ignore"):
        log_z = np.where(n > 0, n * np.log(z), 0.0) if z > 0 else np.where(n > 0, -np.inf, 0.0)
    log_terms = gammaln(m + 1) - gammaln(m - n + 1) - (gammaln(n + 0.5) - gammaln(0.5)) - gammaln(n + 1) + log_z
    return float(logsumexp(log_terms))


def _log_kummer_half(c: float, z: float) -> float:
    """log 1F1(1/2 - c; 1/2; -z) for a half-odd c = k/2 (k even): by Kummer's transformation
    e^(-z) 1F1(c; 1/2; z), a series of positive terms summed in log space; for z so large that the series would
    need more than MAX_SERIES_TERMS terms, the asymptotic form Gamma(1/2)/Gamma(c) z^(c - 1/2)
    sum_s (1/2 - c)_s (1 - c)_s / s! z^(-s) (it terminates, with terms >= 0; the dropped part is O(e^(-z)))."""
    if z == 0:
        return 0.0
    peak = ((z - 1.5) + np.sqrt((z - 1.5) ** 2 + 4 * max(c * z - 0.5, 0.0))) / 2  # where t_(n+1) / t_n = 1
    terms = int(peak + 40 * np.sqrt(peak + 1) + 100)
    if terms <= MAX_SERIES_TERMS:
        n = np.arange(terms)
        log_terms = (gammaln(c + n) - gammaln(c) - gammaln(n + 0.5) + gammaln(0.5) - gammaln(n + 1)
                     + n * np.log(z))
        return float(-z + logsumexp(log_terms))
    a, m = 0.5 - c, int(round(c - 1))  # a - b + 1 = 1 - c = -m
    s = np.arange(m + 1)
    log_terms = [np.log(poch(a, i) * poch(-m, i) / gamma(i + 1)) - i * np.log(z) for i in s]
    return float(gammaln(0.5) - gammaln(c) + (c - 0.5) * np.log(z) + logsumexp(log_terms))


def _log_psi_star(depths: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """log psi*(k, mu, sigma), elementwise; Psi(-(k-1)/2, 1/2, -z) > 0 for every whole k >= 1 and z >= 0."""
    depths, mu, sigma = np.broadcast_arrays(depths, np.asarray(mu, dtype=float), sigma)
    out = np.empty(depths.shape)
    for index in np.ndindex(depths.shape):
        k, z = int(depths[index]), float(mu[index] ** 2 / (2 * sigma[index] ** 2))
        log_kummer = _log_kummer_odd((k - 1) // 2, z) if k % 2 else _log_kummer_half(k / 2, z)
        out[index] = 2 * (k - 1) * np.log(sigma[index]) + 2 * log_kummer
    return out


def _as_result(values: np.ndarray) -> float | np.ndarray:
    return float(values) if values.ndim == 0 else values


def log_psi_star(k: int | np.ndarray, mu: float | np.ndarray, sigma: float | np.ndarray) -> float | np.ndarray:
    """log psi*(k, mu, sigma) = 2 (k-1) log sigma + 2 log Psi(-(k-1)/2, 1/2, -mu^2 / (2 sigma^2)) (Psi: Kummer's
    1F1), the active-count factor of eqs. (2) and (6), evaluated in log space for any mu / sigma; arguments
    broadcast like numpy arrays."""
    return _as_result(_log_psi_star(_depths(k), np.asarray(mu, dtype=float), _positive("sigma", sigma)))


def psi_star(k: int | np.ndarray, mu: float | np.ndarray, sigma: float | np.ndarray) -> float | np.ndarray:
    """psi*(k, mu, sigma) = exp(:func:`log_psi_star`) (it overflows to inf where the log does not)."""
    return _as_result(np.exp(np.asarray(log_psi_star(k, mu, sigma))))


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


# --- Per-input statistics: active counts, eq. (4)'s membership weights, ||Sens(x)||_F^2 ---------------------

def membership_log_weights(preactivations: Sequence[torch.Tensor]) -> torch.Tensor:
    """log p(A(x) | x) of eq. (4) / (8) for each input's own activation pattern: sum over the hidden units of
    log sigmoid(h_l) where h_l > 0 and log(1 - sigmoid(h_l)) where not, i.e. sum_l log sigmoid(|h_l|), from the
    hidden layers' pre-activations (one (B, n_i) tensor per layer)."""
    return sum(torch.nn.functional.logsigmoid(z.abs()).sum(1) for z in preactivations)


def input_statistics(model: nn.Module, x: torch.Tensor, batch_size: int = 256, sensitivity: bool = True
                     ) -> dict[str, np.ndarray]:
    """Per input, labels unused: ``active`` T(x), the number of positive hidden units over all hidden layers;
    ``log_weight``, eq. (4)'s log membership weight (:func:`membership_log_weights`); and with ``sensitivity``
    ``sensitivity`` ||d^2 f/(d theta d x)||_F^2 summed over the outputs (:func:`tangent_sensitivity`). float64
    numpy arrays of length N."""
    _check_batch_size(batch_size)
    layers = linear_layers(model)
    weight = layers[0].weight
    parts: dict[str, list[torch.Tensor]] = dict(active=[], log_weight=[], sensitivity=[])
    with torch.no_grad():
        factor = _first_factor(layers) if sensitivity else None
        for i in range(0, len(x), batch_size):
            batch = x[i:i + batch_size].to(weight)
            preactivations = _preactivations(layers, batch)
            hidden = preactivations[:-1]
            parts["active"].append(sum((z > 0).sum(1) for z in hidden) if hidden else batch.new_zeros(len(batch)))
            parts["log_weight"].append(membership_log_weights(hidden) if hidden else batch.new_zeros(len(batch)))
            if sensitivity:
                parts["sensitivity"].append(_sensitivity_batch(layers, batch, factor, preactivations).sum((1, 2)))
    return {name: torch.cat(values).double().cpu().numpy() for name, values in parts.items() if values}


def self_normalised_mean(values: np.ndarray, log_weights: np.ndarray) -> tuple[float, float]:
    """(log S, effective sample size) of S = sum_n w_n v_n / sum_n w_n for v_n >= 0, w_n = exp(log_weights_n),
    in log space (log-sum-exp), so a common shift of the log-weights changes nothing; ESS = (sum w)^2 / sum w^2."""
    values, log_weights = np.asarray(values, dtype=float), np.asarray(log_weights, dtype=float)
    if values.shape != log_weights.shape or values.size == 0:
        raise ValueError(f"values of shape {values.shape} and log-weights of shape {log_weights.shape} are not "
                         "allowed: one log-weight per value, at least one")
    if (values < 0).any() or not np.isfinite(log_weights).all():
        raise ValueError("negative values or non-finite log-weights are not allowed: S needs v >= 0 and w > 0")
    with np.errstate(divide="ignore"):
        log_mean = logsumexp(log_weights + np.log(values)) - logsumexp(log_weights)
    return float(log_mean), float(np.exp(2 * logsumexp(log_weights) - logsumexp(2 * log_weights)))


def log_weight_product(model: nn.Module) -> float:
    """P = sum_i log max |W_i| over the weight layers (weights only): the log of prod_i w_max_i in eqs. (1), (5)."""
    return float(sum(torch.log(layer.weight.detach().abs().max()).double() for layer in linear_layers(model)))


def log_eq1_constant(model: nn.Module) -> float:
    """log(N_theta d_in N_max^(2(k-1))), the factors of eq. (1) besides (prod_i w_max_i)^2: N_theta the weights
    (eq. (1) is for a biasless network), N_max the widest hidden layer, k the number of weight layers."""
    layers = linear_layers(model)
    n_theta = sum(layer.weight.numel() for layer in layers)
    n_max = max((layer.out_features for layer in layers[:-1]), default=1)
    return float(np.log(n_theta) + np.log(layers[0].in_features) + 2 * (len(layers) - 1) * np.log(n_max))


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000
                      ) -> tuple[float, float]:
    """Mean (per-sample) cross-entropy and accuracy of ``model`` on (x, y)."""
    weight = next(model.parameters())
    total, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        logits = model(x[i:i + batch_size].to(weight))
        targets = y[i:i + batch_size].to(weight.device)
        total += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
        correct += int((logits.argmax(1) == targets).sum())
    return total / len(y), correct / len(y)


def split_statistics(model: nn.Module, x: torch.Tensor, subset: torch.Tensor, batch_size: int = 256) -> dict:
    """The label-free statistics of one split (its inputs ``x`` only): mean and standard deviation of T(x) over
    all of ``x`` (eq. (6)); over ``x[subset]``, log S = log of the eq.-(4)-weighted self-normalised mean of
    ||Sens||_F^2 with its effective sample size (eq. (7)), and the log of the plain mean (for reference)."""
    whole = input_statistics(model, x, batch_size, sensitivity=False)
    started = time.perf_counter()
    part = input_statistics(model, x[subset], batch_size)
    seconds = time.perf_counter() - started
    log_sens, ess = self_normalised_mean(part["sensitivity"], part["log_weight"])
    return dict(mu_T=float(whole["active"].mean()), sigma_T=float(whole["active"].std(ddof=1)),
                log_sens=log_sens, ess=ess, log_sens_unweighted=float(np.log(part["sensitivity"].mean())),
                log_weight_mean=float(part["log_weight"].mean()), n_T=len(x), n_sens=len(part["sensitivity"]),
                seconds_sensitivity=seconds)


def epoch_statistics(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], test_x: torch.Tensor,
                     train_subset: torch.Tensor, test_subset: torch.Tensor, batch_size: int = 256) -> dict:
    """What the estimators need from one state, label-free except the training loss and accuracy: those on
    ``train`` (x, y); :func:`split_statistics` of the train inputs and of the test inputs (``<name>_train``,
    ``<name>_test``; ``*_subset`` index the inputs whose ||Sens||_F^2 is computed); P = log prod_i w_max_i and
    eq. (1)'s log constant. The test labels are not an argument: the actual test values are measured apart."""
    row: dict = {}
    row["train_loss"], row["train_accuracy"] = loss_and_accuracy(model, *train)
    for name, (x, subset) in (("train", (train[0], train_subset)), ("test", (test_x, test_subset))):
        row.update({f"{key}_{name}": value for key, value in split_statistics(model, x, subset, batch_size).items()})
    row["log_w_product"], row["log_eq1_constant"] = log_weight_product(model), log_eq1_constant(model)
    return row


# --- The label-free estimates of eqs. (5)-(7): est(t) = q(t) * train(t), pure functions of per-state statistics

ESTIMATORS = ("eq5", "eq5_constants", "eq6", "eq7", "baseline")
# The only columns the estimators read: no test label and no test loss among them.
ESTIMATOR_INPUTS = ("epoch", "train_loss", "train_accuracy", "log_w_product", "log_eq1_constant", "mu_T_train",
                    "sigma_T_train", "mu_T_test", "sigma_T_test", "log_sens_train", "log_sens_test")


def q_eq5(log_w_product: np.ndarray, log_constant: float | np.ndarray = 0.0) -> np.ndarray:
    """Eq. (5) in log form: q(t) = log Sens1(t-1) / log Sens1(t) with log Sens1 = log_constant + 2 P(t) and
    P = log prod_i w_max_i; ``log_constant=0`` (the paper's form: q = P(t-1) / P(t)) or eq. (1)'s constants
    (:func:`log_eq1_constant`). q(0) = nan: eq. (5) needs the previous state."""
    logs = np.asarray(log_constant, dtype=float) + 2 * np.asarray(log_w_product, dtype=float)
    return np.concatenate([[np.nan], logs[:-1] / logs[1:]])


def q_eq6(depth: int, mu_train: np.ndarray, sigma_train: np.ndarray, mu_test: np.ndarray,
          sigma_test: np.ndarray) -> np.ndarray:
    """Eq. (6): q = psi*(k, mu_te, sigma_te) / psi*(k, mu_tr, sigma_tr), from log psi* (same state)."""
    return np.exp(np.asarray(log_psi_star(depth, mu_test, sigma_test))
                  - np.asarray(log_psi_star(depth, mu_train, sigma_train)))


def q_eq7(log_sens_train: np.ndarray, log_sens_test: np.ndarray) -> np.ndarray:
    """Eq. (7): q = S(X_test) / S(X_train) from the logs of the self-normalised means (same state)."""
    return np.exp(np.asarray(log_sens_test, dtype=float) - np.asarray(log_sens_train, dtype=float))


def estimates_from_q(q, train_loss, train_accuracy) -> dict:
    """One estimator's estimates from its factor q(t) and the same state's training loss and accuracy (arrays or
    Series), by column prefix: ``loss`` = q train_loss; ``accuracy`` = 1 - q (1 - train_accuracy) (the error rate
    estimated like the loss; written so that q = 1 gives train_accuracy exactly); ``accuracy_direct`` = train_accuracy / q (the accuracy moving against the
    sensitivity); ``accuracy_times_q`` = q train_accuracy (the accuracy scaled like the loss). None is clipped
    to [0, 1]."""
    return dict(loss=q * train_loss, accuracy=train_accuracy - (q - 1) * (1 - train_accuracy),
                accuracy_direct=train_accuracy / q,
                accuracy_times_q=q * train_accuracy)


ACCURACY_READINGS = ("accuracy", "accuracy_direct", "accuracy_times_q")  # the prefixes of estimates_from_q


def add_estimates(stats: pd.DataFrame, depth: int) -> pd.DataFrame:
    """``stats`` plus, per estimator of :data:`ESTIMATORS`, its factor q_<name> and the columns
    <prefix>_<name> of :func:`estimates_from_q` (loss_<name>, accuracy_<name>, accuracy_direct_<name>,
    accuracy_times_q_<name>). Reads only :data:`ESTIMATOR_INPUTS`; rows sorted by epoch, one per state 0, 1, 2,
    ... without gaps."""
    stats = stats.sort_values("epoch").reset_index(drop=True)
    if not np.array_equal(stats["epoch"].to_numpy(), np.arange(len(stats))):
        raise ValueError("the estimators need one row per epoch 0, 1, 2, ... without gaps")
    inputs = {name: stats[name].to_numpy(dtype=float) for name in ESTIMATOR_INPUTS}
    changes = dict(eq5=q_eq5(inputs["log_w_product"]),
                   eq5_constants=q_eq5(inputs["log_w_product"], inputs["log_eq1_constant"]),
                   eq6=q_eq6(depth, inputs["mu_T_train"], inputs["sigma_T_train"], inputs["mu_T_test"],
                             inputs["sigma_T_test"]),
                   eq7=q_eq7(inputs["log_sens_train"], inputs["log_sens_test"]),
                   baseline=np.ones(len(stats)))
    out = stats.copy()
    for name, q in changes.items():
        out[f"q_{name}"] = q
        for prefix, values in estimates_from_q(q, inputs["train_loss"], inputs["train_accuracy"]).items():
            out[f"{prefix}_{name}"] = values
    return out


def mean_absolute_errors(estimates: pd.DataFrame, first_epoch: int = 1, last_epoch: int | None = None
                         ) -> pd.DataFrame:
    """Table 2: per estimator, the MAE over epochs ``first_epoch``..``last_epoch`` (None: the last state) of the
    estimated test cross-entropy (mae_loss, per sample; mae_loss_over_64 = mae_loss / 64, the batch-size reading
    of the published numbers, a hypothesis) and accuracy (mae_<reading> for each of :data:`ACCURACY_READINGS`),
    with the scale a reader needs: mean |test - train| of both (mean_gap_*), the range of the test loss over those
    epochs and the number of states averaged (epochs). mean_shift_loss / mean_shift_accuracy = mean |est - train|
    = mean |q - 1| train_loss and mean |q - 1| (1 - train_accuracy) (error-rate reading): by the triangle
    inequality each MAE lies within it of the mean |test - train|.
    The estimates are recomputed from q_<name> and the training loss and accuracy (:func:`estimates_from_q`), so a
    table cached before a reading existed gives every reading."""
    if last_epoch is not None and last_epoch < first_epoch:
        raise ValueError(f"last_epoch={last_epoch} is not allowed: it must be >= first_epoch={first_epoch}")
    epochs = estimates["epoch"]
    rows = estimates[(epochs >= first_epoch) & (epochs <= (epochs.max() if last_epoch is None else last_epoch))]
    if rows.empty:
        raise ValueError(f"first_epoch={first_epoch} is not allowed: the table has epochs {int(epochs.min())}-"
                         f"{int(epochs.max())}")
    scale = dict(mean_gap_loss=float((rows["test_loss"] - rows["train_loss"]).abs().mean()),
                 mean_gap_accuracy=float((rows["test_accuracy"] - rows["train_accuracy"]).abs().mean()),
                 test_loss_min=float(rows["test_loss"].min()), test_loss_max=float(rows["test_loss"].max()),
                 epochs=len(rows))
    out = []
    for name in ESTIMATORS:
        q = rows[f"q_{name}"]
        estimate = estimates_from_q(q, rows["train_loss"], rows["train_accuracy"])
        mae_loss = float((estimate["loss"] - rows["test_loss"]).abs().mean())
        readings = {f"mae_{reading}": float((estimate[reading] - rows["test_accuracy"]).abs().mean())
                    for reading in ACCURACY_READINGS}
        out.append(dict(estimator=name, mae_loss=mae_loss, mae_loss_over_64=mae_loss / 64, **readings,
                        mean_shift_loss=float(((q - 1).abs() * rows["train_loss"]).mean()),
                        mean_shift_accuracy=float(((q - 1).abs() * (1 - rows["train_accuracy"])).mean()),
                        **scale))
    return pd.DataFrame(out)
