"""The one margin search of pexp: the smallest perturbation that flips each point's prediction.

``minimal_perturbation`` runs batched projected gradient steps on every still-open point at once, each point at its
own radius, and bisects each point's radius over a grid (0, resolution, 2 resolution, ..., eps_max): about
1 + log2(eps_max / resolution) attacks per point instead of one per grid value. Its settings:

- ``objective``: ``"margin"`` (default) ascends the logit difference max_{j != y} z_j - z_y, which never saturates;
  ``"ce"`` ascends the cross-entropy, whose gradient is exactly zero in float32 once the logit gap passes ~17
  (the authors' foolbox-2 setting; kept to draw a figure their way).
- ``random_start``: start each attack from a uniform point of the ball (the authors) or from zero (default).
  ``restarts`` adds that many attacks from random starts; a radius counts as failed only when every start failed,
  so a point is declared not flipped within ``eps_max`` only after all of them have.
- ``first_estimate``: ``"fmn"`` (default) first runs foolbox's fast minimum-norm attack on every point; its
  adversarial closes the grid above its norm, PGD bisects below it, and the margin is the smaller of the two.
- ``search``: ``"bisect"`` (default) as above; ``"walk"`` is the attack of paper OM's authors: from zero, steps of
  fixed length ``walk_step`` along the normalised gradient, no ball, stopping each point at its first flip and
  reporting the norm there (``inf`` when ``steps`` steps or the norm cap ``eps_max`` pass without a flip).

Every attack stops a point at its first flipped iterate and records that iterate's norm, an upper bound on the
point's margin; a success at radius r therefore also closes the grid above the norm it found.
``inf`` in the result means "not flipped within eps_max": a censored point, never a measured margin.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

NORMS = {"linf": math.inf, "l2": 2.0}
OBJECTIVES = ("margin", "ce")
SEARCHES = ("bisect", "walk")
FIRST_ESTIMATES = ("fmn", None)
AUTHORS_PROTOCOL = dict(objective="ce", random_start=True, steps=40, rel_stepsize=1 / 30, restarts=0,
                        first_estimate=None)


def attack_objective(logits: torch.Tensor, y: torch.Tensor, objective: str) -> torch.Tensor:
    """Per point, the quantity an attack ascends: the best other logit minus the true one (``margin``), or the
    cross-entropy (``ce``). Positive margin objective <=> misclassified."""
    if objective == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], -math.inf).amax(1)
    return other - true


def _norm(delta: torch.Tensor, p: float) -> torch.Tensor:
    return delta.flatten(1).norm(p=p, dim=1)


def _per_point(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.ndim - 1)))


class _Geometry:
    """The norm ball, its optional subspace (``projector``: a (d, d) orthogonal projection matrix applied to every
    start and gradient) and the box ``bounds``. ``reproject``: after each step is put into the ball and the box,
    project the perturbation onto the subspace again and put it into the box again (the order of paper OM's
    authors' attack: clip, cap the norm, project, clip), so that a perturbation the box clipped returns to the
    subspace; without it only the gradient is projected, and what the box cuts off stays off the subspace."""

    def __init__(self, p: float, bounds: Sequence[float], projector: torch.Tensor | None, reproject: bool = False):
        self.p, self.low, self.high, self.projector = p, float(bounds[0]), float(bounds[1]), projector
        self.reproject = reproject and projector is not None

    def restrict(self, delta: torch.Tensor) -> torch.Tensor:
        if self.projector is None:
            return delta
        return (delta.flatten(1) @ self.projector).reshape(delta.shape)

    def direction(self, gradient: torch.Tensor) -> torch.Tensor:
        """The steepest-ascent step of unit size: sign for l_inf, the normalised (projected) gradient for l2."""
        if self.p == math.inf:
            return gradient.sign()
        gradient = self.restrict(gradient)
        return gradient / _per_point(_norm(gradient, 2.0).clamp_min(1e-30), gradient)

    def random_start(self, like: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """A uniform point of the ball of ``radius`` (l_inf), or a uniformly random direction at a uniform-volume
        distance (l2, inside the subspace when there is one)."""
        if self.p == math.inf:
            return (torch.rand_like(like) * 2 - 1) * _per_point(radius, like)
        direction = self.restrict(torch.randn_like(like))
        dims = like[0].numel() if self.projector is None else max(1, round(float(self.projector.trace())))
        scale = radius * torch.rand(len(like), dtype=like.dtype, device=like.device) ** (1 / dims)
        return direction / _per_point(_norm(direction, 2.0).clamp_min(1e-30), like) * _per_point(scale, like)

    def project(self, x0: torch.Tensor, delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """Into the ball of ``radius`` (inf: no ball), then into the box (then, with ``reproject``, onto the
        subspace and into the box again)."""
        if self.p == math.inf:
            delta = torch.maximum(torch.minimum(delta, _per_point(radius, delta)), -_per_point(radius, delta))
        else:
            shrink = (radius / _norm(delta, 2.0).clamp_min(1e-30)).clamp(max=1.0)
            delta = delta * _per_point(shrink, delta)
        delta = (x0 + delta).clamp(self.low, self.high) - x0
        if self.reproject:  # a projection does not lengthen it: it stays in the ball
            delta = (x0 + self.restrict(delta)).clamp(self.low, self.high) - x0
        return delta


def _attack(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, radius: torch.Tensor, stepsize: torch.Tensor,
            geometry: _Geometry, steps: int, objective: str, random_start: bool,
            norm_cap: float = math.inf) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batched attack: per point, whether some iterate within ``steps`` steps flipped it, the norm of
    the first one that did (inf where none), and the norm of the iterate it ended at (that one, else its last).
    Each point stops at its first flip (or once its norm passes ``norm_cap``, for the walk)."""
    n = len(y)
    size = torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device)
    delta = geometry.random_start(x0, radius) if random_start else torch.zeros_like(x0)
    if random_start:
        delta = geometry.project(x0, delta, radius)
    active = torch.arange(n, device=x0.device)
    for step in range(steps + 1):
        current = delta[active].detach().requires_grad_(step < steps)
        with torch.set_grad_enabled(step < steps):
            logits = model(x0[active] + current)
        flipped = logits.argmax(1) != y[active]
        size[active[flipped]] = _norm(current.detach()[flipped], geometry.p)
        keep = ~flipped
        if step == steps or not bool(keep.any()):
            break
        value = attack_objective(logits, y[active], objective)
        gradient, = torch.autograd.grad(value.sum(), current)
        moved = current.detach() + _per_point(stepsize[active], current) * geometry.direction(gradient)
        moved = geometry.project(x0[active], moved, radius[active])
        delta[active] = moved
        if norm_cap < math.inf:
            keep &= _norm(moved, geometry.p) <= norm_cap
        active = active[keep]
        if len(active) == 0:
            break
    flipped = torch.isfinite(size)  # (a flipped point's delta has moved one step past its flip)
    return flipped, size, torch.where(flipped, size, _norm(delta.detach(), geometry.p))


def _channels_last_on_cpu(search):  # noqa: ANN001, ANN202 - a decorator
    """Convolutions and max-pooling run about 1.3x faster in channels-last memory format on the CPU (measured on
    the PE-net; the same values up to float rounding): batches of images on the CPU are searched in that format,
    and the model's parameters are put back in their own format afterwards."""

    @functools.wraps(search)
    def wrapped(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **settings):  # noqa: ANN202
        images = [p for p in model.parameters() if p.dim() == 4]
        if x.dim() != 4 or not images or images[0].device.type != "cpu":
            return search(model, x, y, **settings)
        already = all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in images)
        model.to(memory_format=torch.channels_last)
        try:
            return search(model, x.contiguous(memory_format=torch.channels_last), y, **settings)
        finally:
            if not already:
                model.to(memory_format=torch.contiguous_format)

    return wrapped


@_channels_last_on_cpu
def minimal_perturbation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf",
                         bounds: Sequence[float] = (-1.0, 1.0), eps_max: float = 0.1, resolution: float = 0.001,
                         steps: int = 100, rel_stepsize: float = 1 / 25, random_start: bool = False,
                         objective: str = "margin", restarts: int = 0, search: str = "bisect",
                         walk_step: float | None = None, reproject: bool = False, batch_size: int = 500,
                         progress: bool = False,
                         directions: torch.Tensor | None = None, bracket: bool = True,
                         first_estimate: str | None = "fmn", fmn_steps: int = 200,
                         details: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
    """For each point, the smallest perturbation norm found that flips the prediction of ``model`` (logits, two
    or more columns): 0 where the point is already misclassified, ``inf`` where none is found up to ``eps_max``
    (censored). See the module docstring for the settings; the default is the accurate search (zero start,
    margin objective, 100 steps of eps/25). The authors' protocol is :data:`AUTHORS_PROTOCOL`.

    ``bisect``: the result is the norm of the smallest successful iterate, within one ``resolution`` of the
    smallest grid radius at which the attack succeeds. ``directions`` (l2 only): (k, d) orthonormal rows;
    the gradient steps are restricted to their span; ``reproject``: after every step the perturbation itself is
    projected onto the span again once the box has clipped it, then clipped again (paper OM's authors' attack).
    ``bracket``: probe each point once just below its first upper bound (one PGD stride below the norm the first
    attack flipped it at; one grid step below FMN's bound), then bisect (fewer rounds; ``False``: plain
    bisection).

    ``first_estimate="fmn"`` (bisect, unrestricted perturbations): first run foolbox's fast minimum-norm attack
    (``fmn_steps`` steps) on every point; its adversarial is an upper bound that closes the grid above it, so the
    PGD bisection only searches below it, and the result is the smaller of the two (both are adversarial examples
    actually found, so the smaller is the better upper bound on the true margin). ``details=True`` returns
    ``dict(margin=..., pgd=..., fmn=..., end=...)``: the result and each attack's own value (pgd: inf where PGD
    found nothing below FMN's bound; fmn: NaN where it did not run) and, for the walk, the norm each point's walk
    ended at (its flip; for a censored point, where its last step left it; 0 when misclassified; NaN for bisect).
    """
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not allowed: choose one of {', '.join(NORMS)}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not allowed: choose one of {', '.join(OBJECTIVES)}")
    if search not in SEARCHES:
        raise ValueError(f"search={search!r} is not allowed: choose one of {', '.join(SEARCHES)}")
    if search == "walk" and not (walk_step and walk_step > 0):
        raise ValueError(f"search='walk' needs walk_step > 0, got walk_step={walk_step!r}")
    if first_estimate not in FIRST_ESTIMATES:
        raise ValueError(f"first_estimate={first_estimate!r} is not allowed: choose one of fmn, None")
    model = model.eval()
    device = next(model.parameters()).device
    projector = None
    if directions is not None:
        if norm != "l2":
            raise ValueError(f"directions restrict l2 attacks only, not norm={norm!r}")
        basis = torch.as_tensor(directions, dtype=x.dtype, device=device)
        projector = basis.T @ basis
    geometry = _Geometry(NORMS[norm], bounds, projector, reproject)
    x, y = x.to(device), y.to(device)
    with torch.no_grad():
        wrong = torch.cat([model(x[i:i + batch_size]).argmax(1) != y[i:i + batch_size]
                           for i in range(0, len(y), batch_size)])
    best = torch.full((len(y),), math.inf, dtype=x.dtype, device=device)
    best[wrong] = 0.0

    def attack(points: torch.Tensor, radius: torch.Tensor, stepsize: torch.Tensor, start: bool,
               cap: float = math.inf) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flipped = [torch.zeros(0, dtype=torch.bool, device=device)]
        size, end = [torch.zeros(0, dtype=x.dtype, device=device)], [torch.zeros(0, dtype=x.dtype, device=device)]
        for i in range(0, len(points), batch_size):
            chunk = points[i:i + batch_size]
            f, s, e = _attack(model, x[chunk], y[chunk], radius[i:i + batch_size], stepsize[i:i + batch_size],
                              geometry, steps, objective, start, cap)
            flipped.append(f)
            size.append(s)
            end.append(e)
        return torch.cat(flipped), torch.cat(size), torch.cat(end)

    def with_restarts(points: torch.Tensor, radius: torch.Tensor, stepsize: torch.Tensor,
                      cap: float = math.inf) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first attack from zero (or a random start), then ``restarts`` more from random starts on the
        points still not flipped: a point fails only when every start failed (it keeps its last attack's end)."""
        flipped, size, end = attack(points, radius, stepsize, random_start, cap)
        for _ in range(restarts):
            todo = torch.nonzero(~flipped).flatten()
            if len(todo) == 0:
                break
            flipped[todo], size[todo], end[todo] = attack(points[todo], radius[todo], stepsize[todo], True, cap)
        return flipped, size, end

    open_points = torch.nonzero(~wrong).flatten()
    fmn = torch.full((len(y),), math.nan, dtype=x.dtype, device=device)
    end = torch.full((len(y),), math.nan, dtype=x.dtype, device=device)
    pgd = best.clone()

    def result() -> torch.Tensor | dict[str, torch.Tensor]:
        return dict(margin=best.cpu(), pgd=pgd.cpu(), fmn=fmn.cpu(), end=end.cpu()) if details else best.cpu()

    if search == "walk":
        radius = torch.full((len(open_points),), math.inf, dtype=x.dtype, device=device)
        stepsize = torch.full_like(radius, float(walk_step))
        flipped, size, end[open_points] = with_restarts(open_points, radius, stepsize, cap=float(eps_max))
        best[open_points] = torch.where(flipped & (size <= eps_max), size, best[open_points])
        end[wrong] = 0.0
        pgd = best.clone()
        return result()

    grid_top = max(1, math.ceil(eps_max / resolution - 1e-9))
    low = torch.zeros(len(y), dtype=torch.long, device=device)                  # largest grid index known to fail
    high = torch.full((len(y),), grid_top + 1, dtype=torch.long, device=device)  # smallest known to succeed
    searching = ~wrong
    # the probe before bisecting: the first attack at eps_max walks out in steps of rel_stepsize * eps_max, so a
    # point it flips has its margin most likely within one such step below the norm found; FMN's bound is tight
    # where PGD is weaker, so below it the probe is one grid step (a failure there ends the search, as a failure
    # of that radius would in the bisection)
    stride = torch.full((len(y),), max(1, math.ceil(rel_stepsize * grid_top)) if bracket else 0,
                        dtype=torch.long, device=device)
    if first_estimate == "fmn" and projector is None and len(open_points):
        found = minimal_norm_check(model, x[open_points], y[open_points], norm=norm, bounds=bounds, steps=fmn_steps,
                                   batch_size=batch_size).to(device=device, dtype=x.dtype)
        fmn[open_points] = found
        within = found <= eps_max
        best[open_points] = torch.where(within, found, best[open_points])
        grid = torch.ceil(found / resolution - 1e-6).clamp(min=1, max=grid_top + 1).to(torch.long)
        high[open_points] = torch.where(within, grid, high[open_points])
        if bracket:
            stride[open_points] = torch.where(within, 1, stride[open_points])
    guessed = torch.zeros(len(y), dtype=torch.bool, device=device)
    rounds = 1 + math.ceil(math.log2(grid_top)) + int(bracket)  # the first attack, the probe, the bisection
    bar = tqdm(total=rounds, desc="margin search", unit="round", disable=not progress, leave=False)
    while True:  # round 1 attacks every open point at eps_max; a point not flipped there is censored (inf)
        todo = torch.nonzero(searching & (high - low > 1)).flatten()
        if len(todo) == 0:
            break
        middle = torch.where(high[todo] > grid_top, grid_top, (low[todo] + high[todo]) // 2)
        guess = (high[todo] - stride[todo]).clamp(min=0)
        use_guess = ~guessed[todo] & (high[todo] <= grid_top) & (guess > low[todo]) & (stride[todo] > 0)
        middle = torch.where(use_guess, guess, middle)
        guessed[todo] |= high[todo] <= grid_top
        radius = middle.to(x.dtype) * resolution
        flipped, size, _ = with_restarts(todo, radius, radius * rel_stepsize)
        best[todo] = torch.where(flipped, torch.minimum(best[todo], size), best[todo])
        pgd[todo] = torch.where(flipped, torch.minimum(pgd[todo], size), pgd[todo])
        # a flip of norm s at radius r shows that every grid radius >= s succeeds
        found = torch.ceil(best[todo] / resolution - 1e-6).clamp(min=1).to(torch.long)
        high[todo] = torch.where(flipped, torch.minimum(middle, torch.minimum(found, high[todo])), high[todo])
        low[todo] = torch.where(flipped, low[todo], middle)
        searching[todo] &= high[todo] <= grid_top
        bar.update(1)
    bar.close()
    return result()


def minimal_norm_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf",
                       bounds: Sequence[float] = (-1.0, 1.0), steps: int = 200,
                       batch_size: int = 500) -> torch.Tensor:
    """An independent estimate of the same margins: foolbox 3's fast minimum-norm attack (FMN, l_inf or l2).
    Per point the norm of the adversarial it returns (0 when already misclassified, inf when it found none)."""
    import foolbox as fb

    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not allowed: choose one of {', '.join(NORMS)}")
    model = model.eval()
    device = next(model.parameters()).device
    attack = (fb.attacks.LInfFMNAttack if norm == "linf" else fb.attacks.L2FMNAttack)(steps=steps)
    fmodel = fb.PyTorchModel(model, bounds=tuple(bounds), device=device)
    out = []
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        _, adversarial, success = attack(fmodel, xb, fb.criteria.Misclassification(yb), epsilons=None)
        with torch.no_grad():
            wrong = model(xb).argmax(1) != yb
            flipped = (model(adversarial).argmax(1) != yb) & success
        size = torch.where(flipped, _norm(adversarial - xb, NORMS[norm]), torch.full_like(yb, math.inf, dtype=xb.dtype))
        out.append(torch.where(wrong, torch.zeros_like(size), size))
    return torch.cat(out).cpu()
