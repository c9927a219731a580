"""The independent check (torchattacks' APGD and Square) flips no point of a linear model whose exact margin lies
above the radius, and catches margins that were overstated."""
import pytest
import torch
from torch import nn

from pexp.eval.crosscheck import CrossCheck, crosscheck_split


def linear_case(n: int = 60, side: int = 6, seed: int = 0):
    d = side * side  # images of one channel: Square attacks square patches of an image
    generator = torch.Generator().manual_seed(seed)
    w, b = torch.randn(d, generator=generator), 0.1
    x = (torch.rand(n, 1, side, side, generator=generator) - 0.5) * 0.4          # far from the box [-1, 1]
    f = x.flatten(1) @ w + b
    y = (f > 0).long()
    logits = nn.Sequential(nn.Linear(d, 1))
    with torch.no_grad():
        logits[0].weight.copy_(w[None]), logits[0].bias.fill_(b)

    class TwoLogits(nn.Module):
        def forward(self, inputs):
            return torch.cat([torch.zeros(len(inputs), 1), logits(inputs.flatten(1))], 1)

    exact = f.abs() / w.abs().sum()  # l_inf distance to the hyperplane: nothing of the box is in the way
    return TwoLogits(), x, y, exact


@pytest.fixture(scope="module")
def case():
    return linear_case()


CHECK = CrossCheck(radii=(0.005, 0.01, 0.02), n_points=40, apgd_steps=50, apgd_restarts=1, square_queries=300)


def test_exact_margins_survive_both_attacks(case):
    model, x, y, exact = case
    found = crosscheck_split(model, x, y, exact * 1.001, (-1.0, 1.0), 0.3, CHECK)
    sample = found[found.points == "sample"]
    assert (sample.claimed_above > 0).all()
    assert found.flipped.sum() == 0


def test_overstated_margins_are_caught(case):
    model, x, y, exact = case
    margins = exact * 3
    margins[::7] = float("inf")  # a few "censored" points with finite true margins below eps_max
    found = crosscheck_split(model, x, y, margins, (-1.0, 1.0), 0.3, CHECK)
    in_sample = torch.zeros(len(x), dtype=torch.bool)
    in_sample[torch.randperm(len(x), generator=torch.Generator().manual_seed(CHECK.seed))[:CHECK.n_points]] = True
    for row in found[found.points == "sample"].itertuples():
        claimed = in_sample & (margins > row.radius)
        surely, possibly = int((claimed & (exact < row.radius * 0.99)).sum()), int((claimed & (exact < row.radius)).sum())
        assert surely > 0 and surely <= row.flipped <= possibly  # every overstated point flipped, none of the others
    censored = found[found.points == "censored"].iloc[0]
    assert censored.claimed_above == int(torch.isinf(margins).sum()) and censored.flipped == censored.claimed_above


def test_claim_judges_the_pairs_within_the_papers_range():
    from pexp.figures.margins import crosscheck_claims
    import pandas as pd

    table = pd.DataFrame(dict(data=["real data"], run=["first"]))
    rows = [dict(split="train", points="sample", radius=r, looked_at=300, claimed_above=250, apgd_flipped=0,
                 square_flipped=0, flipped=0) for r in (0.01, 0.02, 0.05, 0.1)]
    rows.append(dict(split="train", points="censored", radius=0.3, looked_at=20, claimed_above=20, apgd_flipped=9,
                     square_flipped=3, flipped=12))
    assert crosscheck_claims(table, {"first": {"train_accuracy": 1.0}}) == []
    (holds,) = crosscheck_claims(table, {"first": {"crosscheck": rows}})
    assert holds["holds"] and holds["measured"]["first"]["train at eps_max 0.3"] == "12 of 20 flipped (APGD 9, Square 3)"
    rows[1] = dict(rows[1], apgd_flipped=11, flipped=11)   # 11 of 1,000 pairs > 1%
    (fails,) = crosscheck_claims(table, {"first": {"crosscheck": rows}})
    assert fails["judged"] == "11 of 1000 (point, radius) pairs"
    assert not fails["holds"] and fails["measured"]["within the papers' range"] == "11 of 1000 (point, radius) pairs"


def test_crosscheck_needs_a_margin_evaluation(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run([sys.executable, "-m", "pexp.evaluate", "eval=pca", "run=richness_fig2_all",
                           "data=synthetic_cifar2", "crosscheck=true", f"paths.output_dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: crosscheck=true is not allowed with eval=pca: it checks margins, give eval=margin (or a margin "
        "eval option)"]
    assert not (tmp_path / "runs").exists()
