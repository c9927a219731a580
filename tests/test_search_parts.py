"""The margin search's settings and parts: a new part is one class and one eval config file."""
import pytest
import torch
from hydra import compose, initialize_config_dir

from pexp import CONF_DIR
from pexp.config import validate_eval
from pexp.errors import ConfigError
from pexp.eval import margin
from pexp.eval.margin import STAGES, FirstEstimate, SearchSettings, register

from test_margin import exact_margin, linear_problem


@pytest.fixture
def registries(monkeypatch):
    """The registries as they are, restored after the test (a part registered here is gone afterwards)."""
    monkeypatch.setattr(margin, "FIRST_ESTIMATES", dict(margin.FIRST_ESTIMATES))
    monkeypatch.setattr(margin, "SEARCHES", dict(margin.SEARCHES))


def compose_eval(tmp_path, overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[f"hydra.searchpath=[file://{tmp_path}]", *overrides])


def test_a_new_first_estimate_is_one_class_and_one_config_file(registries, tmp_path):
    """A first estimate that claims eps_max for every point, registered here, and an eval config file naming it:
    the config is accepted and the search runs through it. Where the exact margin is beyond eps_max, its claim
    is the margin (stage fmn, the first estimate's); below, the PGD bisection finds the exact margin under it."""

    @register(margin.FIRST_ESTIMATES, "eps_max_bound")
    class EpsMaxBound(FirstEstimate):
        def __call__(self, model, x, y):
            return torch.full((len(y),), self.settings.eps_max, dtype=x.dtype)

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "margin_eps_max_bound.yaml").write_text(
        "defaults:\n  - margin\n  - _self_\nfirst_estimate: eps_max_bound\n")
    cfg = compose_eval(tmp_path, ["eval=margin_eps_max_bound", "eval.eps_max=0.05"])
    validate_eval(cfg)
    settings = SearchSettings.from_config(cfg.eval)
    assert settings.first_estimate == "eps_max_bound" and settings.steps == 100 and settings.apgd

    model, x, y = linear_problem(seed=3)
    exact = exact_margin(model, x, y, "linf")
    eps_max, resolution = settings.eps_max, settings.resolution
    torch.manual_seed(0)
    found = settings.build()(model, x, y, details=True)
    margins, stages = found["margin"].double(), [STAGES[i] for i in found["stage"]]
    beyond, inside = exact > eps_max, (exact > 0) & (exact <= eps_max - resolution)
    assert beyond.sum() >= 5 and inside.sum() >= 5 and (exact == 0).sum() >= 1
    assert torch.equal(torch.isnan(found["fmn"]), exact == 0)  # the part ran on every open point, only there
    assert torch.all(found["fmn"][exact > 0] == eps_max)
    assert torch.all(margins[beyond] == eps_max) and {stages[i] for i in torch.nonzero(beyond).flatten()} == {"fmn"}
    assert torch.all(margins[inside] >= exact[inside] - 1e-6)
    assert torch.all(margins[inside] <= exact[inside] + resolution + 1e-6)
    assert torch.all(torch.isnan(found["apgd"]))  # nothing left censored: the APGD stage never ran
    assert torch.all(margins[exact == 0] == 0)

    with pytest.raises(ConfigError, match=r"^eval.first_estimate='fmm' is not allowed: choose one of fmn, "
                                          r"eps_max_bound$"):
        validate_eval(compose_eval(tmp_path, ["eval=margin_eps_max_bound", "eval.first_estimate=fmm"]))


def test_settings_are_checked_once_with_the_config_keys_named():
    """The same declaration checks a direct call (the setting's name) and an eval config (its key)."""
    with pytest.raises(ConfigError, match=r"^resolution=0.5 is not allowed: must be a number > 0 and <= 0.3$"):
        SearchSettings(eps_max=0.3, resolution=0.5)
    with pytest.raises(ConfigError, match=r"^eval.walk_step=None is not allowed: must be a number > 0$"):
        SearchSettings.from_config(dict(search="walk", walk_step=None))
    with pytest.raises(ConfigError, match=r"^eval.search='scan' is not allowed: choose one of bisect, walk$"):
        SearchSettings.from_config(dict(search="scan"))
    # null means the default for these, and "no first estimate" for first_estimate
    settings = SearchSettings.from_config(dict(objective=None, search=None, restarts=None, first_estimate=None))
    assert (settings.objective, settings.search, settings.restarts, settings.first_estimate) == \
        ("margin", "bisect", 0, None)
    assert SearchSettings.from_config(dict(norm="l3"), norm="l2").norm == "l2"  # the evaluator's own setting wins


def test_the_authors_protocol_is_the_one_of_its_config_file():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["eval=margin_authors"])
    from_file = SearchSettings.from_config(cfg.eval)
    accurate = SearchSettings.from_config(compose_accurate())
    assert from_file == accurate.replace(**margin.AUTHORS_PROTOCOL)
    assert margin.AUTHORS_PROTOCOL == dict(steps=40, rel_stepsize=1 / 30, random_start=True, objective="ce",
                                           first_estimate=None, apgd=False)


def compose_accurate():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=["eval=margin"]).eval
