"""The one margin search of pexp: the smallest perturbation that flips each point's prediction.

The search is built from one :class:`SearchSettings` (every setting declared once, with what it allows, checked when
built; ``SearchSettings.from_config(cfg.eval)`` reads an eval config, whose keys :data:`SearchKeys` declares for the
schema of every evaluator that searches) as a small object per algorithm, registered by name in :data:`SEARCHES`:

- ``search``: ``"bisect"`` (default, :class:`Bisect`) runs batched projected gradient steps on every still-open
  point at once, each point at its own radius, and bisects each point's radius over a grid (0, resolution,
  2 resolution, ..., eps_max): about 1 + log2(eps_max / resolution) attacks per point instead of one per grid
  value. ``"walk"`` (:class:`Walk`) is the attack of paper OM's authors: from zero, steps of fixed length
  ``walk_step`` along the normalised gradient, no ball, stopping each point at its first flip and reporting the
  norm there (``inf`` when ``steps`` steps or the norm cap ``eps_max`` pass without a flip).

and composed of parts:

- the attack, :class:`PGD` (and its ``restarts``, :class:`Restarts`): ``objective`` ``"margin"`` (default)
  ascends the logit difference max_{j != y} z_j - z_y, which never saturates; ``"ce"`` ascends the cross-entropy,
  whose gradient is exactly zero in float32 once the logit gap passes ~17 (the authors' foolbox-2 setting; kept to
  draw a figure their way). ``random_start``: start each attack from a uniform point of the ball (the authors) or
  from zero (default). ``restarts`` adds that many attacks from random starts; a radius counts as failed only when
  every start failed, so a point is declared not flipped within ``eps_max`` only after all of them have.
- ``first_estimate`` (bisect, unrestricted perturbations; registered in :data:`FIRST_ESTIMATES`): ``"fmn"``
  (default, :class:`FMN`) first runs foolbox's fast minimum-norm attack on every point; its adversarial closes the
  grid above its norm, PGD bisects below it, and the margin is the smaller of the two; null: none.
- ``apgd`` (default on; bisect, unrestricted perturbations; :class:`APGD`): the last stage, run only on the points
  the earlier ones left unflipped within ``eps_max``, before any is declared censored: torchattacks' APGD
  (cross-entropy, random starts, adaptive step size and momentum; ``apgd_steps`` steps, ``apgd_restarts`` random
  starts per radius, a radius failing only when every start failed), first at ``eps_max``, then bisected per point
  over the same grid below the norm it found. A flat region of the model around a point stops the attacks from
  zero (PGD, FMN): the gradient there is zero; a random start lands beyond it. The points the earlier stages
  flipped keep their margins.

A new search or first estimate is one class registered under its name (``@register(SEARCHES, "name")``) and one
eval config file that names it. Every attack stops a point at its first flipped iterate and records that
iterate's norm, an upper bound on the point's margin; a success at radius r therefore also closes the grid above
the norm it found. (APGD runs all its steps and returns its last flipped iterate, also an upper bound.)
``inf`` in the result means "not flipped within eps_max": a censored point, never a measured margin.
:func:`minimal_perturbation` is the search as one call; the authors' protocol is :data:`AUTHORS_PROTOCOL`, read from
conf/eval/margin_authors.yaml.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from tqdm.auto import tqdm

from pexp import CONF_DIR
from pexp.errors import ConfigError
from pexp.models import prefers_channels_last
from pexp.schema import UNSET, ScaleKeys, cross_check, has_schema

NORMS = {"linf": math.inf, "l2": 2.0}
OBJECTIVES = ("margin", "ce")
# which stage gave each point's margin (``details=True``): already misclassified (0), foolbox's minimal-norm attack,
# the PGD bisection (or the walk), the APGD stage, or none (inf: censored)
STAGES = ("misclassified", "fmn", "pgd", "apgd", "censored")


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
    import torchattacks  # deferred: ~0.5 s to import (scipy.optimize and more), needed by this stage only

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


# ---- the settings ------------------------------------------------------------------------------------------------
# One registry per kind of part: a search or a first estimate is a class registered here under the name an eval
# config gives it (``search: walk``, ``first_estimate: fmn``); the settings allow exactly the registered names.
SEARCHES: dict[str, type[MarginSearch]] = {}
FIRST_ESTIMATES: dict[str, type[FirstEstimate]] = {}


def register(registry: dict[str, type], name: str) -> Callable[[type], type]:
    """A class decorator: ``registry[name] = cls`` (and ``cls.name = name``)."""

    def add(cls: type) -> type:
        registry[name] = cls
        cls.name = name
        return cls

    return add


# what a setting's declared type allows: one of its ``choices`` (a ``str`` setting), true or false, an integer or
# a number in its range, or a box [low, high]
_KINDS = {"str": "choice", "str | None": "choice", "bool": "bool", "int": "integer", "float": "number",
          "float | None": "number", "tuple[float, float]": "bounds"}


def _setting(default: Any, *, choices: Sequence[str] | Callable[[], Iterable[str]] = (), low: float | None = None,
             low_open: bool = False, high: str | None = None, null_is_default: bool = False,
             config: bool = True) -> Any:
    """One setting of the search and what it allows beyond its type: ``choices`` (a sequence, or a function giving
    the registered names), ``>= low`` (``> low`` when ``low_open``), ``<=`` the setting named ``high``. A type
    ``| None`` allows null (unless the chosen search ``needs`` the setting); ``null_is_default``: null in an eval
    config means the default; ``config``: read from an eval config (else only set by the caller)."""
    return field(default=default, metadata=dict(choices=choices, low=low, low_open=low_open, high=high,
                                                null_is_default=null_is_default, config=config))


def _problem(setting: dataclasses.Field, value: Any, values: Mapping[str, Any]) -> str | None:
    """What ``value`` breaks of its ``setting``'s declaration (None: nothing); ``values``: all the settings."""
    kind, rule = _KINDS[setting.type], setting.metadata
    search = SEARCHES.get(values["search"]) if isinstance(values["search"], str) else None
    optional = setting.type.endswith("| None") and not (search is not None and setting.name in search.needs)
    if value is None and optional:
        return None
    if kind == "choice":
        allowed = list(rule["choices"]() if callable(rule["choices"]) else rule["choices"])
        return None if value in allowed else f"choose one of {', '.join(map(str, allowed))}"
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind == "bounds":
        ok = isinstance(value, Sequence) and len(value) == 2 and all(
            isinstance(b, numbers.Real) and not isinstance(b, bool) for b in value) and value[0] < value[1]
        return None if ok else "must be [low, high] with low < high"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and kind == "integer":
        ok = float(value).is_integer()
    low, high = rule["low"], None if rule["high"] is None else float(values[rule["high"]])
    if ok and low is not None:
        ok = value > low if rule["low_open"] else value >= low
    if ok and high is not None:
        ok = value <= high
    if ok:
        return None
    limits = ([f"{'>' if rule['low_open'] else '>='} {low}"] if low is not None else []) + \
        ([f"<= {high}"] if high is not None else [])
    what = "an integer" if kind == "integer" else "a number"
    return f"must be {what} {' and '.join(limits)}{' or null' if optional else ''}".rstrip()


def _check(values: Mapping[str, Any], prefix: str) -> None:
    """Every setting against its declaration, in the order declared: the first bad one raises one line
    ``<prefix><key>=<value> is not allowed: <what is>``."""
    for item in fields(SearchSettings):
        problem = _problem(item, values[item.name], values)
        if problem:
            raise ConfigError(f"{prefix}{item.name}={values[item.name]!r} is not allowed: {problem}")


@dataclass(frozen=True)
class SearchSettings:
    """Every setting of the margin search, declared once with what it allows (see the module docstring), checked
    when built (:class:`pexp.errors.ConfigError`, one line naming the value). :meth:`from_config` reads them from
    an eval config; :meth:`build` makes the search they choose."""

    random_start: bool = _setting(False)
    reproject: bool = _setting(False)
    eps_max: float = _setting(0.1, low=0, low_open=True)
    resolution: float = _setting(0.001, low=0, low_open=True, high="eps_max")
    steps: int = _setting(100, low=1)
    rel_stepsize: float = _setting(1 / 25, low=0, low_open=True)
    objective: str = _setting("margin", choices=OBJECTIVES, null_is_default=True)
    search: str = _setting("bisect", choices=lambda: SEARCHES, null_is_default=True)
    walk_step: float | None = _setting(None, low=0, low_open=True)
    restarts: int = _setting(0, low=0, null_is_default=True)
    first_estimate: str | None = _setting("fmn", choices=lambda: FIRST_ESTIMATES)
    fmn_steps: int = _setting(200, low=1)
    apgd: bool = _setting(True)
    apgd_steps: int = _setting(100, low=1)
    apgd_restarts: int = _setting(2, low=1)
    norm: str = _setting("linf", choices=tuple(NORMS))
    bracket: bool = _setting(True)
    batch_size: int = _setting(500, low=1)
    bounds: tuple[float, float] = _setting((-1.0, 1.0), config=False)
    progress: bool = _setting(False, config=False)

    def __post_init__(self) -> None:
        _check({item.name: getattr(self, item.name) for item in fields(self)}, "")
        for item in fields(self):  # the checked values as plain Python numbers
            value, kind = getattr(self, item.name), _KINDS[item.type]
            if value is not None and kind in ("integer", "number"):
                object.__setattr__(self, item.name, int(value) if kind == "integer" else float(value))
        object.__setattr__(self, "bounds", tuple(float(b) for b in self.bounds))

    @classmethod
    def from_config(cls, eval_cfg: Mapping[str, Any], prefix: str = "eval.", **fixed: Any) -> SearchSettings:
        """The settings an eval config sets (an absent key keeps the default, and so does null where
        ``null_is_default``), checked with messages naming the config key (``prefix``); ``fixed``: the settings
        the evaluator sets itself (e.g. ``norm``, ``bounds``, ``progress``)."""
        values = {item.name: item.default for item in fields(cls)}
        for item in fields(cls):
            if item.metadata["config"] and item.name in eval_cfg:
                value = eval_cfg[item.name]
                if not (value is None and item.metadata["null_is_default"]):
                    values[item.name] = value
        values.update(fixed)
        _check(values, prefix)
        return cls(**values)

    def replace(self, **changes: Any) -> SearchSettings:
        return dataclasses.replace(self, **changes)

    def build(self) -> MarginSearch:
        """The search these settings choose, with its parts."""
        return SEARCHES[self.search](self)


# The eval config keys of the search settings, for the schema of every evaluator that searches (it extends this):
# each key is declared by its setting above, unset until an eval config sets it (the setting's default applies).
SearchKeys = dataclasses.make_dataclass(
    "SearchKeys",
    [(item.name, Any, field(default=UNSET)) for item in fields(SearchSettings) if item.metadata["config"]],
    bases=(ScaleKeys,),
    namespace={"__doc__": "The search settings an eval config may set, checked by SearchSettings.",
               "__module__": __name__})


@cross_check("eval")
def check_search(cfg: Any) -> None:
    """The search settings of an evaluator that searches (its schema extends :data:`SearchKeys`), checked where they
    are declared."""
    if has_schema(cfg.eval, SearchKeys):
        SearchSettings.from_config(cfg.eval)


def protocol(name: str) -> dict[str, Any]:
    """The search settings the eval config file ``conf/eval/<name>.yaml`` sets itself (over the config it
    extends): the file is the one place a protocol is written."""
    own = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "eval" / f"{name}.yaml"))
    return {key: value for key, value in own.items()
            if key in {item.name for item in fields(SearchSettings) if item.metadata["config"]}}


# ---- the parts ---------------------------------------------------------------------------------------------------
class _Points:
    """The points of one search, on the model's device: the model (in eval mode), the clean points ``x`` and
    labels ``y``, the perturbations' ``geometry``, the points already misclassified (``wrong``) and the others
    (``open``), and per point what has been found: ``best`` (the margin so far), each stage's own record (``pgd``,
    ``fmn``: the first estimate's, ``apgd``) and ``end`` (where the walk ended)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: SearchSettings,
                 directions: torch.Tensor | None):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        projector = None
        if directions is not None:
            if settings.norm != "l2":
                raise ValueError(f"directions restrict l2 attacks only, not norm={settings.norm!r}")
            basis = torch.as_tensor(directions, dtype=x.dtype, device=self.device)
            projector = basis.T @ basis
        self.geometry = _Geometry(NORMS[settings.norm], settings.bounds, projector, settings.reproject)
        self.x, self.y = x.to(self.device), y.to(self.device)
        size = settings.batch_size
        with torch.no_grad():
            self.wrong = torch.cat([self.model(self.x[i:i + size]).argmax(1) != self.y[i:i + size]
                                    for i in range(0, len(self.y), size)])
        self.best = self.full(math.inf)
        self.best[self.wrong] = 0.0
        self.open = torch.nonzero(~self.wrong).flatten()
        self.fmn, self.apgd, self.end = self.full(math.nan), self.full(math.nan), self.full(math.nan)
        self.pgd = self.best.clone()

    def full(self, value: float) -> torch.Tensor:
        return torch.full((len(self.y),), value, dtype=self.x.dtype, device=self.device)

    def result(self, details: bool) -> torch.Tensor | dict[str, torch.Tensor]:
        if not details:
            return self.best.cpu()
        flipped = torch.isfinite(self.best)
        stage = torch.full((len(self.y),), STAGES.index("censored"), dtype=torch.long, device=self.device)
        stage[flipped] = STAGES.index("pgd")
        stage[flipped & (self.best == self.fmn)] = STAGES.index("fmn")
        stage[flipped & (self.best == self.apgd)] = STAGES.index("apgd")
        stage[self.wrong] = STAGES.index("misclassified")
        return dict(margin=self.best.cpu(), pgd=self.pgd.cpu(), fmn=self.fmn.cpu(), apgd=self.apgd.cpu(),
                    stage=stage.cpu(), end=self.end.cpu())


Outcome = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # per point: flipped, the norm found, where it ended


class Restarts:
    """``count`` attacks ``run(chunk, radius, k)`` in batches of ``batch_size``, the k-th one on the points no
    earlier one flipped: a point fails only when every attack failed."""

    def __init__(self, count: int, batch_size: int):
        self.count, self.batch_size = count, batch_size

    def __call__(self, run: Callable[[torch.Tensor, torch.Tensor, int], Outcome], index: torch.Tensor,
                 radius: torch.Tensor) -> Outcome:
        flipped = torch.zeros(len(index), dtype=torch.bool, device=radius.device)
        size = torch.full((len(index),), math.inf, dtype=radius.dtype, device=radius.device)
        end = torch.full((len(index),), math.nan, dtype=radius.dtype, device=radius.device)
        for k in range(self.count):
            todo = torch.nonzero(~flipped).flatten()
            for i in range(0, len(todo), self.batch_size):
                chunk = todo[i:i + self.batch_size]
                flipped[chunk], size[chunk], end[chunk] = run(index[chunk], radius[chunk], k)
        return flipped, size, end


class PGD:
    """The search's gradient attack (:func:`_attack`) on the points ``index`` at their ``radius``: the first one
    from zero (or a random start), then ``restarts`` more from random starts; steps of ``rel_stepsize`` times the
    radius, or of the fixed length ``stepsize`` (the walk), a point stopping once its norm passes ``cap``."""

    def __init__(self, settings: SearchSettings, stepsize: float | None = None, cap: float = math.inf):
        self.settings, self.stepsize, self.cap = settings, stepsize, cap
        self.restarts = Restarts(1 + settings.restarts, settings.batch_size)

    def __call__(self, points: _Points, index: torch.Tensor, radius: torch.Tensor) -> Outcome:
        s = self.settings

        def run(chunk: torch.Tensor, r: torch.Tensor, k: int) -> Outcome:
            step = r * s.rel_stepsize if self.stepsize is None else torch.full_like(r, self.stepsize)
            return _attack(points.model, points.x[chunk], points.y[chunk], r, step, points.geometry, s.steps,
                           s.objective, s.random_start or k > 0, self.cap)

        return self.restarts(run, index, radius)


class APGD:
    """The last stage's attack: torchattacks' APGD (:func:`_apgd`, ``apgd_steps`` steps) from ``apgd_restarts``
    random starts on the points ``index`` at their ``radius``."""

    def __init__(self, settings: SearchSettings):
        self.steps = settings.apgd_steps
        self.restarts = Restarts(settings.apgd_restarts, settings.batch_size)

    def __call__(self, points: _Points, index: torch.Tensor, radius: torch.Tensor) -> Outcome:
        def run(chunk: torch.Tensor, r: torch.Tensor, k: int) -> Outcome:  # noqa: ARG001 - every start random
            return *_apgd(points.model, points.x[chunk], points.y[chunk], r, points.geometry, self.steps), \
                torch.full_like(r, math.nan)

        return self.restarts(run, index, radius)


class FirstEstimate:
    """A first upper bound on the margins, before the bisection (``first_estimate: <name>``; registered in
    :data:`FIRST_ESTIMATES`): called on the open points, per point the norm of an adversarial it found (inf where
    none). Its value is the ``fmn`` record and stage of the result."""

    name: str

    def __init__(self, settings: SearchSettings):
        self.settings = settings

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register(FIRST_ESTIMATES, "fmn")
class FMN(FirstEstimate):
    """foolbox's fast minimum-norm attack (:func:`minimal_norm_check`, ``fmn_steps`` steps)."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.settings
        return minimal_norm_check(model, x, y, norm=s.norm, bounds=s.bounds, steps=s.fmn_steps,
                                  batch_size=s.batch_size)


def _channels_last_on_cpu(search):  # noqa: ANN001, ANN202 - a decorator
    """Batches of images are searched in channels-last memory format where that is faster
    (:func:`pexp.models.prefers_channels_last`), and the model's parameters are put back in their own format
    afterwards."""

    @functools.wraps(search)
    def wrapped(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **options):  # noqa: ANN001, ANN202
        if not prefers_channels_last(model, x):
            return search(self, model, x, y, **options)
        images = [p for p in model.parameters() if p.dim() == 4]
        already = all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in images)
        model.to(memory_format=torch.channels_last)
        try:
            return search(self, model, x.contiguous(memory_format=torch.channels_last), y, **options)
        finally:
            if not already:
                model.to(memory_format=torch.contiguous_format)

    return wrapped


# ---- the searches ------------------------------------------------------------------------------------------------
class MarginSearch:
    """A margin search (``search: <name>``; registered in :data:`SEARCHES`) built from its settings:
    ``search(model, x, y)`` gives per point the smallest perturbation norm found that flips the prediction of
    ``model`` (logits, two or more columns): 0 where already misclassified, ``inf`` where none is found up to
    ``eps_max`` (censored). ``directions`` (l2 only): (k, d) orthonormal rows; the gradient steps are restricted
    to their span (with ``reproject``, the perturbation too, after the box has clipped it: paper OM's authors'
    attack). ``details=True`` returns ``dict(margin, pgd, fmn, apgd, stage, end)`` (see
    :func:`minimal_perturbation`). A subclass says in ``search(points)`` how it fills ``points.best`` and the
    stages' records, and in ``needs`` which optional settings it needs."""

    name: str
    needs: tuple[str, ...] = ()

    def __init__(self, settings: SearchSettings):
        self.settings = settings

    @_channels_last_on_cpu
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, directions: torch.Tensor | None = None,
                 details: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
        return self.run(model, x, y, directions=directions, details=details)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, directions: torch.Tensor | None = None,
            details: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
        """The search in the memory format the points come in (``__call__``: channels-last for images on the CPU)."""
        points = _Points(model, x, y, self.settings, directions)
        self.search(points)
        return points.result(details)

    def search(self, points: _Points) -> None:
        raise NotImplementedError


class _Grid:
    """Each point's bracket on the grid 0, resolution, ..., ``top`` resolution (>= eps_max): ``low``, the largest
    grid index known to fail, and ``high``, the smallest known to succeed (``top + 1``: none yet), bisected while
    ``searching``. ``stride``: the probe before bisecting. The first attack at eps_max walks out in steps of
    rel_stepsize * eps_max, so a point it flips has its margin most likely within one such step below the norm
    found; a first estimate's bound is tight where PGD is weaker, so below it the probe is one grid step (a failure
    there ends the search, as a failure of that radius would in the bisection)."""

    def __init__(self, points: _Points, settings: SearchSettings):
        self.points, self.settings = points, settings
        self.top = max(1, math.ceil(settings.eps_max / settings.resolution - 1e-9))
        n, device = len(points.y), points.device
        self.low = torch.zeros(n, dtype=torch.long, device=device)
        self.high = torch.full((n,), self.top + 1, dtype=torch.long, device=device)
        self.searching = ~points.wrong
        self.stride = torch.full((n,), max(1, math.ceil(settings.rel_stepsize * self.top)) if settings.bracket
                                 else 0, dtype=torch.long, device=device)
        self.guessed = torch.zeros(n, dtype=torch.bool, device=device)

    def close_above(self, index: torch.Tensor, found: torch.Tensor) -> None:
        """A first estimate's upper bounds ``found`` of the points ``index``: those within eps_max are margins
        found, and close the grid above them."""
        points, s = self.points, self.settings
        found = found.to(device=points.device, dtype=points.x.dtype)
        points.fmn[index] = found
        within = found <= s.eps_max
        points.best[index] = torch.where(within, found, points.best[index])
        grid = torch.ceil(found / s.resolution - 1e-6).clamp(min=1, max=self.top + 1).to(torch.long)
        self.high[index] = torch.where(within, grid, self.high[index])
        if s.bracket:
            self.stride[index] = torch.where(within, 1, self.stride[index])

    def reopen(self, index: torch.Tensor) -> None:
        """A fresh bracket for a stronger attack: the earlier attacks' failures bound nothing for it."""
        self.low[index], self.high[index], self.stride[index], self.searching[index] = 0, self.top + 1, 0, True

    def bisect(self, attack: Callable[[_Points, torch.Tensor, torch.Tensor], Outcome], record: torch.Tensor,
               description: str, probe: bool) -> None:
        """With ``attack(points, index, radius)``: round 1 attacks every searching point at eps_max (a point not
        flipped there stays inf); then each point's radius is bisected between the largest grid radius known to
        fail and the smallest known to succeed (after the probe, where ``stride`` sets one). Each flip also lowers
        ``best`` and the attack's own ``record``."""
        points, resolution, top = self.points, self.settings.resolution, self.top
        low, high, stride, searching, guessed, best = (self.low, self.high, self.stride, self.searching,
                                                       self.guessed, points.best)
        rounds = 1 + math.ceil(math.log2(top)) + int(probe)
        bar = tqdm(total=rounds, desc=description, unit="round", disable=not self.settings.progress, leave=False)
        while True:
            todo = torch.nonzero(searching & (high - low > 1)).flatten()
            if len(todo) == 0:
                break
            middle = torch.where(high[todo] > top, top, (low[todo] + high[todo]) // 2)
            guess = (high[todo] - stride[todo]).clamp(min=0)
            use_guess = ~guessed[todo] & (high[todo] <= top) & (guess > low[todo]) & (stride[todo] > 0)
            middle = torch.where(use_guess, guess, middle)
            guessed[todo] |= high[todo] <= top
            flipped, size, _ = attack(points, todo, middle.to(points.x.dtype) * resolution)
            best[todo] = torch.where(flipped, torch.minimum(best[todo], size), best[todo])
            record[todo] = torch.where(flipped, torch.minimum(record[todo], size), record[todo])
            # a flip of norm s at radius r shows that every grid radius >= s succeeds
            found = torch.ceil(best[todo] / resolution - 1e-6).clamp(min=1).to(torch.long)
            high[todo] = torch.where(flipped, torch.minimum(middle, torch.minimum(found, high[todo])), high[todo])
            low[todo] = torch.where(flipped, low[todo], middle)
            searching[todo] &= high[todo] <= top
            bar.update(1)
        bar.close()


@register(SEARCHES, "bisect")
class Bisect(MarginSearch):
    """PGD per radius, each point's radius bisected over the grid (0, resolution, ..., eps_max), after the first
    estimate (unrestricted perturbations) and before the APGD stage (``apgd``; unrestricted perturbations) on the
    points still unflipped. The result is the norm of the smallest successful iterate, within one ``resolution``
    of the smallest grid radius at which the attack succeeds; ``bracket``: probe each point once just below its
    first upper bound, then bisect (fewer rounds; ``False``: plain bisection)."""

    def __init__(self, settings: SearchSettings):
        super().__init__(settings)
        name = settings.first_estimate
        self.first_estimate = None if name is None else FIRST_ESTIMATES[name](settings)
        self.attack = PGD(settings)
        self.last_stage = APGD(settings) if settings.apgd else None

    def search(self, points: _Points) -> None:
        grid = _Grid(points, self.settings)
        unrestricted = points.geometry.projector is None
        if self.first_estimate is not None and unrestricted and len(points.open):
            grid.close_above(points.open, self.first_estimate(points.model, points.x[points.open],
                                                              points.y[points.open]))
        grid.bisect(self.attack, points.pgd, "margin search", self.settings.bracket)
        left = torch.nonzero(~points.wrong & torch.isinf(points.best)).flatten()  # censored so far
        if self.last_stage is not None and unrestricted and len(left):
            grid.reopen(left)
            points.apgd[left] = math.inf
            grid.bisect(self.last_stage, points.apgd, "APGD stage", False)


@register(SEARCHES, "walk")
class Walk(MarginSearch):
    """Paper OM's authors' attack: from zero, steps of fixed length ``walk_step`` along the normalised gradient, no
    ball, each point stopped at its first flip, its norm there the result (``inf`` when ``steps`` steps or the norm
    cap ``eps_max`` pass without a flip); ``end``: where each walk ended (0 when misclassified)."""

    needs = ("walk_step",)

    def __init__(self, settings: SearchSettings):
        super().__init__(settings)
        self.attack = PGD(settings, stepsize=float(settings.walk_step), cap=float(settings.eps_max))

    def search(self, points: _Points) -> None:
        index = points.open
        radius = torch.full((len(index),), math.inf, dtype=points.x.dtype, device=points.device)
        flipped, size, points.end[index] = self.attack(points, index, radius)
        points.best[index] = torch.where(flipped & (size <= self.settings.eps_max), size, points.best[index])
        points.end[points.wrong] = 0.0
        points.pgd = points.best.clone()


def minimal_perturbation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                         directions: torch.Tensor | None = None, details: bool = False,
                         **settings: Any) -> torch.Tensor | dict[str, torch.Tensor]:
    """The margin search with :class:`SearchSettings` ``settings`` (their defaults: the accurate search, FMN,
    then PGD from zero on the margin objective, 100 steps of eps/25, then APGD on what is left; the authors'
    protocol is :data:`AUTHORS_PROTOCOL`): per point the smallest perturbation norm found that flips the
    prediction of ``model``; see :class:`MarginSearch`.

    ``details=True`` returns ``dict(margin=..., pgd=..., fmn=..., apgd=..., stage=..., end=...)``: the result, each
    attack's own value (pgd: inf where PGD found nothing below the first estimate's bound; fmn: the first
    estimate's, NaN where it did not run; apgd: NaN where it did not run, inf where it ran and found nothing), per
    point the index in :data:`STAGES` of the stage that gave the margin, and ``end``: for the walk, the norm each
    point's walk ended at (its flip; for a censored point, where its last step left it; 0 when misclassified; NaN
    for bisect)."""
    return SearchSettings(**settings).build()(model, x, y, directions=directions, details=details)


# The authors' margin protocol: the settings conf/eval/margin_authors.yaml sets over the accurate search.
AUTHORS_PROTOCOL = protocol("margin_authors")


def minimal_norm_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf",
                       bounds: Sequence[float] = (-1.0, 1.0), steps: int = 200,
                       batch_size: int = 500) -> torch.Tensor:
    """An independent estimate of the same margins: foolbox 3's fast minimum-norm attack (FMN, l_inf or l2).
    Per point the norm of the adversarial it returns (0 when already misclassified, inf when it found none)."""
    import foolbox as fb  # deferred: its import needs a git executable (GitPython), needed by this attack only

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
