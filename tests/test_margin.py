"""The margin search agrees with exact margins of a linear model."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pexp.errors import ConfigError
from pexp.eval.margin import AUTHORS_PROTOCOL, SearchSettings, minimal_norm_check, minimal_perturbation


def linear_problem(seed=0, n=64, d=30):
    generator = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, d, generator=generator, dtype=torch.float64))
        model.bias.copy_(torch.randn(2, generator=generator, dtype=torch.float64) * 0.1)
    x = (torch.rand(n, d, generator=generator, dtype=torch.float64) - 0.5)  # inside [-0.5, 0.5]: bounds never bind
    y = torch.randint(0, 2, (n,), generator=generator)
    return model, x, y


def exact_margin(model, x, y, p):
    w = (model.weight[1] - model.weight[0]).detach()
    b = float(model.bias[1] - model.bias[0])
    value = x @ w + b
    dual = w.abs().sum() if p == "linf" else w.norm()  # the dual norm of the attack norm
    margin = value.abs() / dual
    wrong = (value > 0).long() != y
    return torch.where(wrong, torch.zeros_like(margin), margin)


@pytest.mark.parametrize("norm,resolution", [("linf", 0.001), ("l2", 0.005)])
def test_margin_equals_exact_value_for_a_linear_model(norm, resolution):
    model, x, y = linear_problem()
    exact = exact_margin(model, x, y, norm)
    eps_max = math.ceil(float(exact[exact > 0].quantile(0.6)) / resolution) * resolution  # about 40% beyond reach
    torch.manual_seed(0)
    # from the clean point, 40 steps of eps/30 reach the optimal corner / boundary of the ball exactly
    found = minimal_perturbation(model, x, y, norm=norm, eps_max=eps_max, resolution=resolution, steps=40,
                                 random_start=False).double()
    inside = exact <= eps_max - resolution
    assert inside.sum() >= 10 and (~inside).sum() >= 5  # the test covers both cases
    assert torch.all(found[inside] >= exact[inside] - 1e-6)
    assert torch.all(found[inside] <= exact[inside] + resolution + 1e-6)
    assert torch.all(found[exact > eps_max + 1e-9] == math.inf)
    assert torch.all(found[exact == 0] == 0)


def test_authors_protocol_never_reports_less_than_the_exact_margin():
    """With a random start, 40 steps of eps/30 cannot always reach the corner (each coordinate moves at most
    1.33 eps): margins are upper bounds, off by up to ~25% for a linear model, never below the exact value."""
    model, x, y = linear_problem(seed=2)
    exact = exact_margin(model, x, y, "linf")
    torch.manual_seed(0)
    found = minimal_perturbation(model, x, y, eps_max=0.2, resolution=0.001, **AUTHORS_PROTOCOL).double()
    reached = torch.isfinite(found)
    assert reached.sum() > 20
    assert torch.all(found[reached] >= exact[reached] - 1e-6)
    assert torch.all(found[reached] <= 1.3 * exact[reached] + 0.001 + 1e-6)


def exact_margin_in_box(model, x, y, low=-1.0, high=1.0):
    """Exact l_inf margin of a linear model inside the box [low, high]^d: the smallest r with
    sum_i |w_i| min(r, room_i) >= |w.x + b|, room_i the distance to the bound in the flipping direction."""
    w = (model.weight[1] - model.weight[0]).detach()
    value = x @ w + float(model.bias[1] - model.bias[0])
    margins = []
    for point, v, target in zip(x, value, y):
        if (v > 0).long() != target:
            margins.append(0.0)
            continue
        direction = -torch.sign(v) * torch.sign(w)  # move every coordinate against the score's side
        room = torch.where(direction > 0, high - point, point - low)
        order = torch.argsort(room)
        need, slope, r = float(v.abs()), float(w.abs().sum()), 0.0
        for i in order:  # the change grows linearly in r with slope sum|w_j| over coordinates not yet at a bound
            gain = slope * (float(room[i]) - r)
            if gain >= need:
                break
            need, r, slope = need - gain, float(room[i]), slope - float(w[i].abs())
        margins.append(r + need / slope if slope > 1e-12 and need > 0 else (r if need <= 0 else math.inf))
    return torch.tensor(margins, dtype=torch.float64)


def next_to_the_box_bounds(seed=4):
    """A linear model whose points sit next to the box bounds (-1, 1) in the direction that flips them, with
    margins of a few hundredths: model, x, y, the exact margin in the box, the exact margin without the box."""
    generator = torch.Generator().manual_seed(seed)
    model, x, y = linear_problem(seed=seed, n=80, d=30)
    w = (model.weight[1] - model.weight[0]).detach()
    b = float(model.bias[1] - model.bias[0])
    side = torch.where(y == 1, 1.0, -1.0).double()[:, None]              # the score's sign each point should have
    flip = -side * torch.sign(w)[None]                                    # the direction that flips it
    near = torch.rand(x.shape, generator=generator, dtype=torch.float64) < 0.5  # half the coordinates sit
    gap = torch.rand(x.shape, generator=generator, dtype=torch.float64) * 0.02  # within 0.02 of that bound
    x = torch.where(near, flip * (1 - gap), x)
    # shift the free coordinates along -flip until the score is side * target (a margin of a few hundredths)
    target = (0.02 + 0.1 * torch.rand(len(y), generator=generator, dtype=torch.float64)) * w.abs().sum()
    free = (~near).double() * w.abs()[None]
    shift = (side[:, 0] * target - (x @ w + b)) * side[:, 0] / free.sum(1)
    x = torch.where(near, x, (x - flip * shift[:, None]).clamp(-1, 1))
    y = (x @ w + b > 0).long()                                             # every point correctly classified
    return model, x, y, exact_margin_in_box(model, x, y), exact_margin(model, x, y, "linf")


def test_default_search_is_exact_next_to_the_box_bounds():
    """Points next to the box bounds in the attack's direction: the exact margin is not |w.x + b| / ||w||_1, and
    the default search (zero start, margin loss) finds it within one resolution step for >= 95% of the points,
    never below it; the authors' protocol misses it."""
    model, x, y, exact, unbounded = next_to_the_box_bounds()
    resolution, eps_max = 0.001, 0.3
    assert (exact > unbounded * 1.05).sum() >= 20  # the bounds bind for many points
    inside = exact <= eps_max - resolution
    assert inside.sum() >= 30
    found = minimal_perturbation(model, x, y, eps_max=eps_max, resolution=resolution).double()
    assert torch.all(found[inside] >= exact[inside] - 1e-6)
    assert (found[inside] <= exact[inside] + resolution + 1e-6).double().mean() >= 0.95
    torch.manual_seed(0)
    authors = minimal_perturbation(model, x, y, eps_max=eps_max, resolution=resolution, **AUTHORS_PROTOCOL).double()
    assert (authors[inside] > exact[inside] + resolution + 1e-6).sum() >= 5


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_saturated_logits_still_give_the_exact_margin(norm):
    """Logit gaps of 50 or more: the cross-entropy's gradient is exactly zero in float32, the margin loss's is
    not. The default search returns the exact (finite) margin; the authors' protocol reports the points unflipped."""
    model, x, y = linear_problem(seed=5, n=48, d=20)
    model = model.float()
    with torch.no_grad():
        model.weight.mul_(400.0)
        model.bias.mul_(400.0)
    x = x.float()
    exact = exact_margin(model.double(), x.double(), y, norm).float()
    model = model.float()
    with torch.no_grad():
        gap = (model(x)[:, 1] - model(x)[:, 0]).abs()
    right = exact > 0
    assert (gap[right] >= 50).float().mean() > 0.8
    resolution = 0.001 if norm == "linf" else 0.005
    eps_max = math.ceil(float(exact[right].max()) / resolution + 2) * resolution
    found = minimal_perturbation(model, x, y, norm=norm, eps_max=eps_max, resolution=resolution)
    assert torch.all(torch.isfinite(found))
    assert torch.all(found >= exact - 1e-4) and torch.all(found <= exact + resolution + 1e-4)
    torch.manual_seed(0)
    authors = minimal_perturbation(model, x, y, norm=norm, eps_max=eps_max, resolution=resolution, **AUTHORS_PROTOCOL)
    assert torch.isinf(authors[right & (gap >= 50)]).float().mean() > 0.5


class _FlatAtZero(nn.Module):
    """Class 0 while |x_0| <= 0.075: logits (0, -1 + 40 relu(|x_0| - 0.05)). At x = 0 the gradient is exactly
    zero, so an attack from zero cannot move; one from a random start can."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        other = -1 + 40 * torch.relu(x[:, 0].abs() - 0.05) + 0 * self.dummy
        return torch.stack([torch.zeros_like(other), other], 1)


def test_a_point_is_censored_only_after_every_restart_failed():
    model = _FlatAtZero()
    x, y = torch.zeros(6, 4), torch.zeros(6, dtype=torch.long)
    # PGD and FMN from zero are stuck at zero: censored (the APGD stage, off here, starts at random points)
    assert torch.all(torch.isinf(minimal_perturbation(model, x, y, eps_max=0.1, apgd=False)))
    torch.manual_seed(0)
    found = minimal_perturbation(model, x, y, eps_max=0.1, restarts=8, apgd=False)
    assert torch.all(found >= 0.075 - 1e-6) and torch.all(found <= 0.1)
    assert torch.isfinite(found).all()  # with eight random starts, each point is flipped by one of them


class FlatCubes(nn.Module):
    """Class 0 inside an l_inf cube around each of its centres, class 1 beyond ``margins`` from the nearest
    centre: logits (0, -1 + (d - flat) / (margin - flat)) for d - flat > 0, d the l_inf distance to the nearest
    centre (centres 1.2 apart, so within 0.35 of a centre it is the nearest). The gradient is exactly zero
    within ``flat`` of a centre: an attack from the centre cannot move; one from a random start on the ball's
    surface (APGD's) can. The exact l_inf margin of a centre is its ``margin`` (the box is 0.05 or more away)."""

    def __init__(self, centres, margins, flat=0.02):
        super().__init__()
        self.register_buffer("centres", centres)
        self.register_buffer("slopes", 1 / (margins - flat))
        self.flat = flat
        self.dummy = nn.Parameter(torch.zeros((), dtype=centres.dtype))

    def forward(self, x):
        distance = (x[:, None, :] - self.centres[None]).abs().amax(2)
        other = (-1 + self.slopes * torch.relu(distance - self.flat)).amin(1) + 0 * self.dummy
        return torch.stack([torch.zeros_like(other), other], 1)


def flat_cubes(n=12, d=6):
    bits = (torch.arange(n)[:, None] >> torch.arange(d)[None]) & 1
    centres = (bits * 1.2 - 0.6).to(torch.float64)                   # corners of [-0.6, 0.6]^d
    margins = torch.linspace(0.05, 0.35, n, dtype=torch.float64)
    return FlatCubes(centres, margins), centres.clone(), torch.zeros(n, dtype=torch.long), margins


def test_apgd_stage_flips_the_points_in_flat_regions_within_a_grid_step_of_the_exact_margin():
    """Zero gradient around every point: FMN and PGD from zero stay there (every point censored without the APGD
    stage); the stage flips every point whose exact margin is within eps_max, its margin an upper bound within
    one grid step of the exact one; the points beyond eps_max stay censored."""
    from pexp.eval.margin import STAGES

    model, x, y, exact = flat_cubes()
    resolution, eps_max = 0.001, 0.3
    torch.manual_seed(0)
    without = minimal_perturbation(model, x, y, eps_max=eps_max, resolution=resolution, apgd=False)
    assert torch.all(torch.isinf(without))
    torch.manual_seed(0)
    found = minimal_perturbation(model, x, y, eps_max=eps_max, resolution=resolution, details=True)
    margin = found["margin"]
    inside = exact <= eps_max - resolution
    assert inside.sum() >= 8 and (exact > eps_max).sum() >= 2
    assert torch.all(margin[inside] >= exact[inside] - 1e-9)
    assert torch.all(margin[inside] <= exact[inside] + resolution + 1e-9)
    assert torch.all(torch.isinf(margin[exact > eps_max]))
    assert torch.all(torch.isinf(found["fmn"])) and torch.all(torch.isinf(found["pgd"]))
    assert torch.equal(found["apgd"][inside], margin[inside])  # the stage's own record, and the stage named
    assert [STAGES[i] for i in found["stage"][inside]] == ["apgd"] * int(inside.sum())
    assert [STAGES[i] for i in found["stage"][exact > eps_max]] == ["censored"] * int((exact > eps_max).sum())


def test_apgd_stage_changes_nothing_where_the_earlier_stages_are_exact():
    """A linear model with points next to the box bounds: FMN and PGD are exact, so the points they leave
    unflipped have no adversarial within eps_max. The stage runs on exactly those, flips none of them, and every
    margin is the one of the search without it."""
    model, x, y, exact, _ = next_to_the_box_bounds(seed=5)
    eps_max = math.floor(float(exact.median()) * 1000) / 1000
    torch.manual_seed(0)
    without = minimal_perturbation(model, x, y, eps_max=eps_max, resolution=0.001, apgd=False, details=True)
    torch.manual_seed(0)
    found = minimal_perturbation(model, x, y, eps_max=eps_max, resolution=0.001, details=True)
    censored = torch.isinf(without["margin"])
    assert censored.sum() >= 20 and (~censored).sum() >= 20
    assert torch.all(exact[censored] > eps_max - 1e-9)
    assert torch.equal(~torch.isnan(found["apgd"]), censored)  # the stage ran on the censored points only
    assert torch.all(torch.isinf(found["apgd"][censored]))    # and found nothing there: none exists
    assert torch.equal(torch.isinf(found["margin"]), censored)
    assert torch.allclose(found["margin"][~censored], without["margin"][~censored], rtol=0, atol=1e-12)
    assert torch.equal(found["stage"], without["stage"])


def test_apgd_keeps_to_the_box_and_to_each_points_radius():
    """One batched APGD run, each point at its own radius: just above the exact margin in the box it flips the
    points, with perturbations no larger than their radius; between the margin without the box and the one in
    the box, where only leaving the box would flip a point, it flips none."""
    from pexp.eval.margin import NORMS, _apgd, _Geometry

    model, x, y, exact, unbounded = next_to_the_box_bounds()
    geometry = _Geometry(NORMS["linf"], (-1.0, 1.0), None)
    torch.manual_seed(0)
    above = exact + 0.002
    flipped, size = _apgd(model, x, y, above, geometry, steps=20)
    assert flipped.double().mean() >= 0.95
    assert torch.all(size[flipped] <= above[flipped] + 1e-9) and torch.all(size[flipped] >= exact[flipped] - 1e-9)
    binds = exact > unbounded * 1.05
    assert binds.sum() >= 20
    between = (exact[binds] + unbounded[binds]) / 2
    flipped, _ = _apgd(model, x[binds], y[binds], between, geometry, steps=20)
    assert not flipped.any()


def test_apgd_settings_are_checked():
    model, x, y = linear_problem()
    with pytest.raises(ConfigError, match=r"^apgd='yes' is not allowed: must be true or false$"):
        minimal_perturbation(model, x, y, apgd="yes")
    with pytest.raises(ConfigError, match=r"^apgd_steps=0 is not allowed: must be an integer >= 1$"):
        minimal_perturbation(model, x, y, apgd_steps=0)


def test_stage_counts_of_the_margin_figures():
    """The claims' stage counts: which stage gave each margin, and the censored count before and after APGD."""
    import pandas as pd

    from pexp.figures.margins import search_check_claim, stage_counts
    rows = pd.DataFrame(dict(
        run="first", split="train", eps_max=0.3, data="synthetic",
        margin=[0.0, 0.05, 0.04, 0.2, math.inf, math.inf],
        fmn=[math.nan, 0.05, 0.06, 0.5, math.inf, 0.4],
        pgd=[0.0, math.inf, 0.04, math.inf, math.inf, math.inf],
        apgd=[math.nan, math.nan, math.nan, 0.2, math.inf, math.inf],
        stage=["misclassified", "fmn", "pgd", "apgd", "censored", "censored"]))
    counts = stage_counts(rows)
    assert counts == dict(points=6, misclassified=1, margin_from=dict(fmn=1, pgd=1, apgd=1),
                          found=dict(fmn=2, pgd=1, apgd=1), apgd_ran_on=3, censored_before_apgd=3, censored=2)
    older = stage_counts(rows.drop(columns=["apgd", "stage"]))  # results written before the APGD stage
    assert older["censored_before_apgd"] == older["censored"] == 2 and "margin_from" not in older
    table = pd.concat([rows, rows.assign(split="test")])
    item = search_check_claim(table)
    assert item["measured"]["stages"]["first"]["test"] == counts
    # of the 10 points measured (margin > 0, both splits), PGD went more than a step below FMN on 2 (0.04 < 0.06 -
    # 0.001, once per split): beyond the 5% allowed
    assert item["measured"]["pgd_more_than_one_step_below"] == 2 / 10 and not item["holds"]
    assert item["judged"] == "20% of 10 points"


def test_walk_stops_at_the_first_flip():
    """The OM authors' attack: fixed l2 steps along the normalised gradient from zero; on a linear model it walks
    straight to the boundary and stops at the first step past it."""
    model, x, y = linear_problem(seed=6, n=40, d=10)
    exact = exact_margin(model, x, y, "l2")
    step = 0.01
    found = minimal_perturbation(model, x, y, norm="l2", bounds=(-1e6, 1e6), search="walk", walk_step=step,
                                 steps=10_000, eps_max=1e3).double()
    right = exact > 0
    expected = torch.ceil(exact[right] / step - 1e-9) * step
    assert torch.allclose(found[right], expected, atol=1e-6)
    capped = minimal_perturbation(model, x, y, norm="l2", bounds=(-1e6, 1e6), search="walk", walk_step=step,
                                  steps=10_000, eps_max=float(exact[right].median())).double()
    assert torch.all(torch.isinf(capped[exact > float(exact[right].median()) + step]))


def test_minimal_norm_check_agrees_with_the_exact_margin():
    model, x, y = linear_problem(seed=7, n=40, d=20)
    exact = exact_margin(model, x, y, "linf")
    found = minimal_norm_check(model.float(), x.float(), y, norm="linf").double()
    right = exact > 0
    assert torch.all(found[right] >= exact[right] - 1e-4)
    assert (found[right] <= exact[right] * 1.02 + 1e-4).double().mean() >= 0.9


def test_search_needs_about_log2_attacks_per_point():
    model, x, y = linear_problem(seed=1)
    calls = []
    original = model.forward
    model.forward = lambda inputs: (calls.append(len(inputs)), original(inputs))[1]
    minimal_perturbation(model, x, y, eps_max=0.1, resolution=0.001, steps=5, first_estimate=None, apgd=False)
    points_passes = sum(calls)
    # per point: 1 clean pass + at most 1 + ceil(log2 100) = 8 attacks of (5 steps + 1 check) passes
    assert points_passes <= len(y) * (1 + 8 * 6)


def test_bad_norm_is_a_clear_error():
    model, x, y = linear_problem()
    with pytest.raises(ValueError, match="norm='l3' is not allowed"):
        minimal_perturbation(model, x, y, norm="l3")


@pytest.mark.parametrize("part", ["subspace", "complement"])
def test_restricted_margin_equals_exact_value_for_a_linear_model(part):
    """With perturbations restricted to a subspace S (projector P), the l2 margin of w.x + b is |w.x + b| / ||P w||."""
    model, x, y = linear_problem(n=48, d=12)
    basis = torch.linalg.qr(torch.randn(12, 4, generator=torch.Generator().manual_seed(3),
                                        dtype=torch.float64))[0].T  # (4, 12) orthonormal rows
    projector = basis.T @ basis
    if part == "complement":
        projector = torch.eye(12, dtype=torch.float64) - projector
        basis = torch.linalg.svd(projector)[2][:8]  # (8, 12) rows spanning the complement
    w = (model.weight[1] - model.weight[0]).detach()
    value = x @ w + float(model.bias[1] - model.bias[0])
    exact = torch.where((value > 0).long() != y, torch.zeros_like(value), value.abs() / (projector @ w).norm())
    resolution = 0.005
    eps_max = math.ceil(float(exact[exact > 0].quantile(0.6)) / resolution) * resolution
    found = minimal_perturbation(model, x, y, norm="l2", bounds=(-1e6, 1e6), eps_max=eps_max,
                                 resolution=resolution, random_start=False, directions=basis).double()
    inside = exact <= eps_max - resolution
    assert inside.sum() >= 10
    assert torch.all(found[inside] >= exact[inside] - 1e-6)
    assert torch.all(found[inside] <= exact[inside] + resolution + 1e-6)


def test_restricted_attack_never_leaves_its_subspace():
    from pexp.eval.margin import _attack, _Geometry

    model, x, y = linear_problem(n=32, d=12)
    basis = torch.linalg.qr(torch.randn(12, 3, dtype=torch.float64,
                                        generator=torch.Generator().manual_seed(1)))[0].T
    geometry = _Geometry(2.0, (-1e6, 1e6), basis.T @ basis)
    radius = torch.full((32,), 2.0, dtype=torch.float64)
    delta = geometry.project(x, geometry.random_start(x, radius), radius)
    off = delta - delta @ basis.T @ basis
    assert off.norm(dim=1).max() < 1e-9 and delta.norm(dim=1).max() <= 2.0 + 1e-9
    flipped, size, _ = _attack(model, x, y, radius, radius / 30, geometry, 40, "margin", True)
    assert flipped.any() and torch.all(size[flipped] <= 2.0 + 1e-9)
    steps = geometry.direction(torch.randn(5, 12, dtype=torch.float64))
    assert (steps - steps @ basis.T @ basis).abs().max() < 1e-9  # every step stays in the subspace


@pytest.mark.parametrize("search", ["bisect", "walk"])
def test_every_point_already_misclassified(search):
    model, x, y = linear_problem(seed=8, n=10)
    with torch.no_grad():
        y = 1 - model(x).argmax(1)
    found = minimal_perturbation(model, x, y, norm="l2", search=search, walk_step=0.01, eps_max=1.0)
    assert torch.all(found == 0)


def test_first_estimate_is_an_upper_bound_and_the_margin_the_smaller_of_the_two():
    """FMN's adversarial closes the grid above its norm; PGD bisects below it; the margin is the smaller value,
    never below the exact one."""
    model, x, y = linear_problem(seed=9, n=40, d=20)
    exact = exact_margin(model, x, y, "linf")
    found = minimal_perturbation(model, x, y, eps_max=0.3, resolution=0.001, details=True)
    right = exact > 0
    margin, pgd, fmn = (found[key].double() for key in ("margin", "pgd", "fmn"))
    assert torch.all(margin[right] >= exact[right] - 1e-6)
    assert torch.all(margin[right] <= exact[right] + 0.001 + 1e-6)
    assert torch.all(torch.isfinite(fmn[right])) and torch.all(torch.isnan(fmn[~right]))
    assert torch.allclose(margin[right], torch.minimum(pgd[right], fmn[right]))
    plain = minimal_perturbation(model, x, y, eps_max=0.3, resolution=0.001, first_estimate=None).double()
    assert torch.all((plain[right] - margin[right]).abs() <= 0.001 + 1e-6)  # the same margins, fewer PGD rounds


def test_below_a_tight_first_estimate_pgd_runs_once():
    """Where FMN's bound is within a grid step of the margin, the probe one grid step below it fails and ends the
    search: one PGD attack per point, not a bisection (the same margins as plain bisection)."""
    model, x, y = linear_problem(seed=9, n=40, d=20)
    calls = []
    original = model.forward
    model.forward = lambda inputs: (calls.append(inputs.requires_grad), original(inputs))[1]
    found = minimal_perturbation(model, x, y, eps_max=0.3, resolution=0.001, steps=20, details=True)
    probe_passes = sum(calls)  # passes with a gradient to the input: FMN's and PGD's steps
    calls.clear()
    plain = minimal_perturbation(model, x, y, eps_max=0.3, resolution=0.001, steps=20, bracket=False, details=True)
    assert torch.allclose(found["margin"], plain["margin"], atol=0.001 + 1e-6)
    assert probe_passes < sum(calls)
    pgd_rounds = (probe_passes - 200) / 20  # FMN: 200 steps, one batch
    assert pgd_rounds <= 1.5


class TinyConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.head(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


def test_images_are_searched_in_channels_last_and_the_model_is_put_back():
    model = TinyConvNet()
    torch.manual_seed(1)
    x = torch.rand(30, 3, 8, 8) * 2 - 1
    y = model(x).argmax(1)
    found = minimal_perturbation(model, x, y, eps_max=0.5, resolution=0.001)
    assert model.conv.weight.is_contiguous()  # the caller's model is as it was
    reference = SearchSettings(eps_max=0.5, resolution=0.001).build().run(model, x, y)  # default layout
    gap = torch.where(torch.isinf(found) & torch.isinf(reference), 0.0, (found - reference).abs())
    assert (gap <= 0.001 + 1e-6).float().mean() >= 0.95
    assert torch.isfinite(found).any()


def test_correct_only_summary_leaves_out_the_points_misclassified_without_perturbation():
    """pe-multiclass's test error is ~40%: the papers' curves start there; the reported correct-only summary
    must be the curve of the other points alone."""
    import pandas as pd

    from pexp.figures.margins import correct_only_summary
    rows = [dict(run="all", split="train", margin=m) for m in (0.02, 0.04, 0.06, 0.08)]
    rows += [dict(run="all", split="test", margin=m) for m in (0.0, 0.0, 0.02, 0.04, 0.06, 0.08)]
    summary = correct_only_summary(pd.DataFrame(rows), "all")
    assert summary["train"]["points"] == 4 and summary["test"]["points"] == 4
    assert summary["test"]["median"] == summary["train"]["median"] == 0.05
    assert summary["mean_gap_test_minus_train"] == 0 and summary["largest_gap"] == 0
