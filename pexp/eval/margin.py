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
- ``apgd`` (default on; bisect, unrestricted perturbations): the last stage, run only on the points the earlier ones
  left unflipped within ``eps_max``, before any is declared censored: torchattacks' APGD (cross-entropy, random
  starts, adaptive step size and momentum; ``apgd_steps`` steps, ``apgd_restarts`` random starts per radius, a
  radius failing only when every start failed), first at ``eps_max``, then bisected per point over the same grid
  below the norm it found. A flat region of the model around a point stops the attacks from zero (PGD, FMN): the
  gradient there is zero; a random start lands beyond it. The points the earlier stages flipped keep their margins.
- ``search``: ``"bisect"`` (default) as above; ``"walk"`` is the attack of paper OM's authors: from zero, steps of
  fixed length ``walk_step`` along the normalised gradient, no ball, stopping each point at its first flip and
  reporting the norm there (``inf`` when ``steps`` steps or the norm cap ``eps_max`` pass without a flip).

Every attack stops a point at its first flipped iterate and records that iterate's norm, an upper bound on the
point's margin; a success at radius r therefore also closes the grid above the norm it found. (APGD runs all its
steps and returns its last flipped iterate, also an upper bound.)
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
# which stage gave each point's margin (``details=True``): already misclassified (0), foolbox's minimal-norm attack,
# the PGD bisection (or the walk), the APGD stage, or none (inf: censored)
STAGES = ("misclassified", "fmn", "pgd", "apgd", "censored")
AUTHORS_PROTOCOL = dict(objective="ce", random_start=True, steps=40, rel_stepsize=1 / 30, restarts=0,
                        first_estimate=None, apgd=False)


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


class _BallFrame(nn.Module):
    """The model as torchattacks' APGD sees it. APGD works on inputs in [0, 1] with one scalar radius; here each
    row u_i stands for the point x0_i + (u_i - 1/2) r_i / (1/4), clipped into the box: APGD's ball of radius 1/4
    around 1/2 is every point's own ball of radius r_i (so one call searches each point at its own radius, and
    [0, 1] never clips), and the perturbation keeps the precision of the point's own coordinates. The real box
    is the clip inside: every perturbation of the ball that stays in the box is reachable, and no other. The clip
    passes the gradient through unchanged, as if it were not there: a coordinate that a random start put beyond
    a bound on the wrong side is pulled back by the gradient at the clipped point, not frozen by a zero one."""

    CENTRE, RADIUS = 0.5, 0.25

    def __init__(self, model: nn.Module, x0: torch.Tensor, radius: torch.Tensor, geometry: _Geometry):
        super().__init__()
        self.model, self.x0, self.geometry = model, x0, geometry
        self.scale = _per_point(radius / self.RADIUS, x0)
        self.shape = x0.shape if x0.dim() == 4 else (len(x0), 1, 1, x0[0].numel())  # APGD wants images

    def start(self) -> torch.Tensor:
        return torch.full(self.shape, self.CENTRE, dtype=self.x0.dtype, device=self.x0.device)

    def delta(self, u: torch.Tensor) -> torch.Tensor:
        if len(u) != len(self.x0):  # APGD called on a subset of the rows: the rows' radii would be misread
            raise RuntimeError(f"APGD passed {len(u)} rows, the frame holds {len(self.x0)}")
        moved = (u.reshape(self.x0.shape) - self.CENTRE) * self.scale + self.x0
        clipped = moved.clamp(self.geometry.low, self.geometry.high)
        return moved + (clipped - moved).detach() - self.x0  # the clipped value, the unclipped gradient

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.x0 + self.delta(u))


def _apgd(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, radius: torch.Tensor, geometry: _Geometry,
          steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One batched run of torchattacks' APGD (cross-entropy, one random start, ``steps`` steps), each point in
    its own ball of ``radius``: per point, whether the adversarial it returned flips the prediction (checked again
    here after projecting it into the ball and the box), and its norm (inf where not). Its random start is drawn
    from a seed taken from torch's global generator, whose state APGD's own seeding leaves unchanged."""
    import torchattacks

    frame = _BallFrame(model, x0, radius, geometry).eval()  # eval: APGD restores the mode it found
    start = frame.start()
    with torch.no_grad():
        open_rows = torch.nonzero(frame(start).argmax(1) == y).flatten()  # APGD attacks only these itself
    size = torch.full((len(y),), math.inf, dtype=x0.dtype, device=x0.device)
    if len(open_rows) == 0:
        return torch.isfinite(size), size
    if len(open_rows) < len(y):
        frame = _BallFrame(model, x0[open_rows], radius[open_rows], geometry).eval()
        start = frame.start()
    seed = int(torch.randint(0, 2**31 - 1, ()))
    with torch.random.fork_rng(devices=[x0.device] if x0.device.type == "cuda" else []):
        attack = torchattacks.APGD(frame, norm="Linf" if geometry.p == math.inf else "L2", eps=frame.RADIUS,
                                   steps=steps, n_restarts=1, seed=seed, loss="ce")
        adversarial = attack(start, y[open_rows])
    with torch.no_grad():
        delta = geometry.project(frame.x0, frame.delta(adversarial), radius[open_rows])
        flipped = model(frame.x0 + delta).argmax(1) != y[open_rows]
    size[open_rows[flipped]] = _norm(delta[flipped], geometry.p)
    return torch.isfinite(size), size


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
                         first_estimate: str | None = "fmn", fmn_steps: int = 200, apgd: bool = True,
                         apgd_steps: int = 100, apgd_restarts: int = 2,
                         details: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
    """For each point, the smallest perturbation norm found that flips the prediction of ``model`` (logits, two
    or more columns): 0 where the point is already misclassified, ``inf`` where none is found up to ``eps_max``
    (censored). See the module docstring for the settings; the default is the accurate search (zero start,
    margin objective, 100 steps of eps/25, then APGD on what is left). The authors' protocol is
    :data:`AUTHORS_PROTOCOL`.

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
    actually found, so the smaller is the better upper bound on the true margin).

    ``apgd`` (bisect, unrestricted perturbations): on the points neither FMN nor PGD flipped within ``eps_max``,
    torchattacks' APGD at ``eps_max`` (``apgd_restarts`` random starts of ``apgd_steps`` steps), then the same
    bisection below the norm it found, with APGD as the attack; the other points are not touched.

    ``details=True`` returns ``dict(margin=..., pgd=..., fmn=..., apgd=..., stage=..., end=...)``: the result, each
    attack's own value (pgd: inf where PGD found nothing below FMN's bound; fmn: NaN where it did not run; apgd:
    NaN where it did not run, inf where it ran and found nothing), per point the index in :data:`STAGES` of
    the stage that gave the margin, and ``end``: for the walk, the norm each point's walk ended at (its flip; for
    a censored point, where its last step left it; 0 when misclassified; NaN for bisect).
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
    if not isinstance(apgd, bool):
        raise ValueError(f"apgd={apgd!r} is not allowed: choose one of True, False")
    if apgd and not (apgd_steps >= 1 and apgd_restarts >= 1):
        raise ValueError(f"apgd_steps={apgd_steps!r}, apgd_restarts={apgd_restarts!r} are not allowed: both must "
                         f"be integers >= 1")
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

    def attempts(run, points: torch.Tensor, radius: torch.Tensor,  # noqa: ANN001 - run: (points, radius, k)
                 count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` attacks ``run(points, radius, k)`` in batches, the k-th one on the points no earlier one
        flipped: a point fails only when every attack failed. Per point: flipped, the norm found, and where its
        last attack ended."""
        flipped = torch.zeros(len(points), dtype=torch.bool, device=device)
        size = torch.full((len(points),), math.inf, dtype=x.dtype, device=device)
        end = torch.full((len(points),), math.nan, dtype=x.dtype, device=device)
        for k in range(count):
            todo = torch.nonzero(~flipped).flatten()
            for i in range(0, len(todo), batch_size):
                chunk = todo[i:i + batch_size]
                flipped[chunk], size[chunk], end[chunk] = run(points[chunk], radius[chunk], k)
        return flipped, size, end

    def pgd_attack(points: torch.Tensor, radius: torch.Tensor, cap: float = math.inf,
                   stepsize: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first PGD attack from zero (or a random start), then ``restarts`` more from random starts; steps of
        ``rel_stepsize`` times the radius (or ``stepsize``)."""
        def run(chunk: torch.Tensor, r: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            step = r * rel_stepsize if stepsize is None else torch.full_like(r, stepsize)
            return _attack(model, x[chunk], y[chunk], r, step, geometry, steps, objective, random_start or k > 0,
                           cap)
        return attempts(run, points, radius, 1 + restarts)

    def apgd_attack(points: torch.Tensor, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return attempts(lambda chunk, r, k: (*_apgd(model, x[chunk], y[chunk], r, geometry, apgd_steps),
                                             torch.full_like(r, math.nan)), points, radius, apgd_restarts)

    open_points = torch.nonzero(~wrong).flatten()
    fmn = torch.full((len(y),), math.nan, dtype=x.dtype, device=device)
    apgd_found, end = fmn.clone(), fmn.clone()
    pgd = best.clone()

    def result() -> torch.Tensor | dict[str, torch.Tensor]:
        if not details:
            return best.cpu()
        flipped = torch.isfinite(best)
        stage = torch.full((len(y),), STAGES.index("censored"), dtype=torch.long, device=device)
        stage[flipped] = STAGES.index("pgd")
        stage[flipped & (best == fmn)] = STAGES.index("fmn")
        stage[flipped & (best == apgd_found)] = STAGES.index("apgd")
        stage[wrong] = STAGES.index("misclassified")
        return dict(margin=best.cpu(), pgd=pgd.cpu(), fmn=fmn.cpu(), apgd=apgd_found.cpu(), stage=stage.cpu(),
                    end=end.cpu())

    if search == "walk":
        radius = torch.full((len(open_points),), math.inf, dtype=x.dtype, device=device)
        flipped, size, end[open_points] = pgd_attack(open_points, radius, cap=float(eps_max),
                                                     stepsize=float(walk_step))
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

    def bisect(attack, record: torch.Tensor, description: str, probe: bool) -> None:  # noqa: ANN001
        """With ``attack(points, radius)``: round 1 attacks every searching point at eps_max (a point not flipped
        there stays inf); then each point's radius is bisected between the largest grid radius known to fail and
        the smallest known to succeed (after the probe, where ``stride`` sets one). Each flip also lowers
        ``best`` and the attack's own ``record``."""
        rounds = 1 + math.ceil(math.log2(grid_top)) + int(probe)
        bar = tqdm(total=rounds, desc=description, unit="round", disable=not progress, leave=False)
        while True:
            todo = torch.nonzero(searching & (high - low > 1)).flatten()
            if len(todo) == 0:
                break
            middle = torch.where(high[todo] > grid_top, grid_top, (low[todo] + high[todo]) // 2)
            guess = (high[todo] - stride[todo]).clamp(min=0)
            use_guess = ~guessed[todo] & (high[todo] <= grid_top) & (guess > low[todo]) & (stride[todo] > 0)
            middle = torch.where(use_guess, guess, middle)
            guessed[todo] |= high[todo] <= grid_top
            flipped, size, _ = attack(todo, middle.to(x.dtype) * resolution)
            best[todo] = torch.where(flipped, torch.minimum(best[todo], size), best[todo])
            record[todo] = torch.where(flipped, torch.minimum(record[todo], size), record[todo])
            # a flip of norm s at radius r shows that every grid radius >= s succeeds
            found = torch.ceil(best[todo] / resolution - 1e-6).clamp(min=1).to(torch.long)
            high[todo] = torch.where(flipped, torch.minimum(middle, torch.minimum(found, high[todo])), high[todo])
            low[todo] = torch.where(flipped, low[todo], middle)
            searching[todo] &= high[todo] <= grid_top
            bar.update(1)
        bar.close()

    bisect(pgd_attack, pgd, "margin search", bracket)
    left = torch.nonzero(~wrong & torch.isinf(best)).flatten()  # censored so far
    if apgd and projector is None and len(left):
        # a fresh bracket for APGD: the earlier attacks' failures bound nothing for a stronger attack
        low[left], high[left], stride[left], searching[left] = 0, grid_top + 1, 0, True
        apgd_found[left] = math.inf
        bisect(apgd_attack, apgd_found, "APGD stage", False)
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
