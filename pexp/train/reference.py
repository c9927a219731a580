"""Algorithm 1 one sample at a time: the oracle the batched implementation (``pexp.train.perturb`` and
``pexp.train.loop.training_step``) is tested against and benchmarked against. Slow on purpose; never used for
training."""
from __future__ import annotations

import torch

from pexp.models import EntryNet, score
from pexp.train.perturb import COLUMN_STARTS


def one_at_a_time_perturbation(model: EntryNet, x: torch.Tensor, sign: int, eps: float, pieces: int,
                               active: list[bool], direction: torch.Tensor | None = None) -> list[torch.Tensor | None]:
    """One sample (a batch of one), one direction (+1: argmax of the score, or of v^T f with ``direction`` v,
    -1: argmin): ``pieces`` signed-gradient steps of size eps/pieces from zero at every active entry point (None
    elsewhere)."""
    deltas = [torch.zeros(1, *shape, dtype=x.dtype, device=x.device) if on else None
              for on, shape in zip(active, model.entry_shapes)]
    for _ in range(pieces):
        for delta in deltas:
            if delta is not None:
                delta.requires_grad_(True)
        out = model(x, deltas)
        value = score(out).sum() if direction is None else (out[0] * direction).sum()
        grads = iter(torch.autograd.grad(value, [d for d in deltas if d is not None]))
        deltas = [None if d is None else (d + sign * eps / pieces * next(grads).sign()).detach() for d in deltas]
    return deltas


def one_at_a_time_direction(model: EntryNet, x: torch.Tensor, active: list[bool], rounds: int) -> torch.Tensor:
    """PE section 7.1's v for one sample: the full Jacobian of f w.r.t. the stacked active perturbations
    (torch.autograd.functional.jacobian); from each start in turn (the eigenvectors of J J^T, largest eigenvalue
    first, the unit vectors, the COLUMN_STARTS k largest columns of J normalised) ``rounds`` of
    v <- J sign(J^T v) / norm; the start that ends with the largest ||J^T v||_1 (the first on ties), first entry
    made >= 0."""
    sizes = [int(torch.Size(shape).numel()) for on, shape in zip(active, model.entry_shapes) if on]

    def outputs(flat: torch.Tensor) -> torch.Tensor:
        pieces = iter(flat.split(sizes))
        deltas = [next(pieces).reshape(1, *shape) if on else None for on, shape in zip(active, model.entry_shapes)]
        return model(x, deltas)[0]

    jacobian = torch.autograd.functional.jacobian(outputs, x.new_zeros(sum(sizes)))
    k = jacobian.shape[0]
    eigenvectors = torch.linalg.eigh(jacobian @ jacobian.T).eigenvectors
    norms = [float(jacobian[:, c].norm()) for c in range(jacobian.shape[1])]
    columns = sorted(range(len(norms)), key=lambda c: -norms[c])[:COLUMN_STARTS * k]
    starts = [eigenvectors[:, k - 1 - i] for i in range(k)] + list(torch.eye(k, dtype=x.dtype, device=x.device)) \
        + [jacobian[:, c] / norms[c] if norms[c] > 0 else torch.zeros_like(jacobian[:, c]) for c in columns]
    best, best_value = None, -1.0
    for v in starts:
        for _ in range(rounds):
            moved = jacobian @ torch.sign(jacobian.T @ v)
            if moved.norm() > 0:
                v = moved / moved.norm()
        value = float((jacobian.T @ v).abs().sum())
        if value > best_value:
            best, best_value = v, value
    return -best if best[0] < 0 else best


def one_at_a_time_update(model: EntryNet, buffers: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                         eps: float, pieces: int, active: list[bool], lr: float, momentum: float) -> None:
    """The authors' loop for one batch: per sample, the argmax and argmin perturbations and both squared errors
    (f - y)^2; gradients summed over the batch; buffer <- m buffer + (1 - m) sum; theta <- theta - lr buffer.
    ``buffers`` (one zero-initialised tensor per parameter) carry the momentum between calls."""
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(y)):
        xi, yi = x[i:i + 1], y[i:i + 1].to(x.dtype)
        for sign in (+1, -1):
            deltas = one_at_a_time_perturbation(model, xi, sign, eps, pieces, active)
            loss = ((model(xi, deltas)[:, 0] - yi) ** 2).sum()
            for acc, grad in zip(total, torch.autograd.grad(loss, params)):
                acc += grad
    with torch.no_grad():
        for param, buffer, grad in zip(params, buffers, total):
            buffer.mul_(momentum).add_((1 - momentum) * grad)
            param.sub_(lr * buffer)
