"""richness-fig3 (beyond the paper): PCA of the PE-net's hidden layers after three trainings, end to end on the
synthetic stand-in."""
import json

import pandas as pd
import pytest

from pexp.figures import FIGURES
from pexp.figures.base import make_figure
from pexp.figures.pca import components_table, richer_layers_claims
from pexp.report import build_report

from conftest import assert_judged

TINY_PCA = ["data=synthetic_cifar2", "data.n_train=120", "data.n_test=60", "model.size=1", "train.epochs=2",
            "train.batch_size=20", "train.progress=false", "eval.n_train=60"]


@pytest.mark.slow
def test_richness_fig3_end_to_end_on_synthetic_data(tmp_path, capsys):
    overrides = [*TINY_PCA, f"paths.output_dir={tmp_path / 'outputs'}"]
    paths = make_figure(FIGURES["richness-fig3"], overrides, tmp_path / "f", progress=False)
    table = pd.read_csv(paths["csv"])
    assert set(table["run"]) == {"no perturbation", "input only", "all layers"}
    assert set(table["name"]) == {"conv1", "conv2", "fc1", "fc2"}  # the four hidden layers, not the output
    assert set(table["experiment"]) == {"pe_fig4_se", "richness_fig2_first", "richness_fig2_all"}
    for _, curve in table.groupby(["run", "layer"]):
        assert curve["component"].max() <= 60 and abs(curve["cumulative"].iloc[-1] - 1) < 1e-9
    (item,) = assert_judged(json.loads(paths["claims.json"].read_text()))
    assert item["data"] == "synthetic"
    counts = item["measured"]["counts"]
    assert set(counts) == {"layer1_conv1", "layer2_conv2", "layer3_fc1", "layer4_fc2"}
    assert all(1 <= found["components_90"] <= found["components_99"] <= found["components"]
               for runs in counts.values() for found in runs.values())
    assert item["holds"] == (item["measured"]["not_more"] == [])
    assert json.loads(paths["meta.json"].read_text())["beyond_the_paper"] is True
    assert paths["png"].stat().st_size > 10_000
    page = build_report(tmp_path / "f", tmp_path / "report").read_text()
    assert "richness-fig3 (beyond the paper)</h3>" in page and "pe-fig4 (beyond" not in page
    capsys.readouterr()
    make_figure(FIGURES["richness-fig3"], overrides, tmp_path / "f2", progress=False)
    assert capsys.readouterr().out.count("reusing finished run") == 3  # the three runs found by hash


def test_the_claim_compares_each_layer_and_level():
    """A table where the all-layers net is richer except at 99% of one layer: that pair is named, the claim fails."""
    rows = []
    spectra = {"all layers": [0.5, 0.8, 0.95, 1.0], "input only": [0.7, 0.92, 0.99, 1.0],
               "no perturbation": [0.9, 0.95, 0.99, 1.0]}
    for layer, name in ((1, "conv1"), (2, "fc1")):
        for run, cumulative in spectra.items():
            if layer == 2 and run == "input only":
                cumulative = [0.5, 0.85, 0.95, 1.0]  # as many for 99% as the all-layers net
            rows += [dict(layer=layer, name=name, width=4, run=run, component=k + 1, cumulative=c, data="toy")
                     for k, c in enumerate(cumulative)]
    table = pd.DataFrame(rows)
    counts = components_table(table)
    assert counts["layer1_conv1"]["all layers"]["components_90"] == 3
    assert counts["layer1_conv1"]["no perturbation"]["components_90"] == 1
    (item,) = assert_judged(richer_layers_claims(table, {}))
    assert not item["holds"] and item["judged"] == "6 of 8 (layer, level, other training) counts larger"
    assert item["measured"]["not_more"] == ["layer2_fc1 90%: all layers 3 vs input only 3",
                                            "layer2_fc1 99%: all layers 4 vs input only 4"]
    rows = [row for row in rows if not (row["layer"] == 2)]
    assert richer_layers_claims(pd.DataFrame(rows), {})[0]["holds"]
