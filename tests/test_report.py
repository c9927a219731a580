"""The report page: every figure id, images that exist and load, claims counted right, all text escaped."""
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from pexp.figures import FIGURES  # noqa: E402
from pexp.report import build_report, figure_ids, format_value, main  # noqa: E402
from pexp.runs import write_json  # noqa: E402

from conftest import ROOT  # noqa: E402

FIGURES_MD = ROOT.parent / "shared" / "FIGURES.md"
CHROMIUM = next((path for path in (shutil.which("chromium"), shutil.which("chromium-browser"),
                                   shutil.which("google-chrome")) if path), None)


@pytest.mark.skipif(not FIGURES_MD.exists(), reason=f"{FIGURES_MD} is not here (only beside the project)")
def test_all_figure_ids_match_figures_md():
    ids, paper = {}, None
    for line in FIGURES_MD.read_text().splitlines():
        if match := re.match(r"## Paper (\w+):", line):
            paper = match.group(1)
        if line.startswith("### "):
            for figure_id in re.findall(r"\b(?:richness|pe|offmanifold|tangent)-(?:fig|table)\d+\b", line):
                ids[figure_id] = paper
    # figures beyond the papers (marked so in the registry and the report) are not among FIGURES.md's ids
    assert ids == {figure_id: figure.paper for figure_id, figure in FIGURES.items() if not figure.beyond}


def test_every_registered_figure_is_listed_with_its_paper():
    for figure_id, figure in FIGURES.items():
        assert figure_ids()[figure_id] == figure.paper
    assert list(dict.fromkeys(figure_ids().values())) == ["R", "PE", "OM", "TS"]


def fake_figures(folder: Path, corrupt_image: bool = False) -> Path:
    """Two figures (one real-data, one toy) with PNG, claims and meta; every other id missing."""
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    fig.savefig(folder / "richness-fig2.png", dpi=50)
    fig.savefig(folder / "pe-fig1.png", dpi=50)
    plt.close(fig)
    if corrupt_image:
        (folder / "pe-fig1.png").write_bytes((folder / "pe-fig1.png").read_bytes()[:60])
    write_json(folder / "richness-fig2.claims.json", [
        dict(claim="first < all <script>alert(1)</script>", measured={"ratio": 1.5, "gap": float("inf")},
             expected="ratio >= 1.5 & more", holds=True, data="cifar10"),
        dict(claim="second", measured=float("nan"), expected="x", holds=False, data="cifar10")])
    write_json(folder / "pe-fig1.claims.json", [
        dict(claim=f"seed {seed}", measured=[1, 2.5], expected="CE < SE", holds=seed != 3, data="toy")
        for seed in (1, 2, 3)])
    write_json(folder / "richness-fig2.meta.json", dict(
        id="richness-fig2", paper="R", what="margins", overrides=["scale=smoke", "perturb.eps=0.01"],
        runs=[dict(label="all", experiment="richness_fig2_all", run_dir="/x/runs/alg1_all/0123456789ab",
                   hash="0123456789ab", data="cifar10", train_seconds=12.0)],
        data=["cifar10"], seconds=30.5, train_seconds=12.0, created_utc="2024-01-01T00:00:00Z"))
    return folder


class Page(HTMLParser):
    """What the tests look at in the page: images, section ids, code snippets, tags, text."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.sections, self.tags, self.code, self.text = [], [], [], [], []
        self._in_code = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "section":
            self.sections.append(attrs["id"])
        self._in_code = tag == "code"

    def handle_endtag(self, tag):
        self._in_code = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_code:
            self.code.append(data)


def test_report_lists_every_id_counts_claims_and_escapes_text(tmp_path):
    page_path = build_report(fake_figures(tmp_path / "figures"), tmp_path / "report")
    page = Page(page_path.read_text())
    assert page.sections == list(figure_ids())  # every id, paper order
    assert page.images == ["img/richness-fig2.png", "img/pe-fig1.png"]
    for src in page.images:
        assert (page_path.parent / src).read_bytes() == (tmp_path / "figures" / Path(src).name).read_bytes()
    text = " ".join(page.text)
    missing = len(figure_ids()) - 2
    assert f"3 of 5 claims hold: 1/2 on real data, 2/3 on toy data; {missing} figures missing" in text
    assert "script" not in page.tags and "<script>alert(1)</script>" in text  # shown, not run
    assert "make reproduce FIG=richness-fig1" in page.code and "make reproduce FIG=pe-fig1" not in page.code
    assert "scale=smoke perturb.eps=0.01" in page.code and "0123456789ab" in page.code
    assert "ratio: 1.5, gap: inf" in text and "NaN" in text and "30.5 s" in text
    assert "pe-fig1.meta.json is missing" in text  # a figure without meta.json is flagged, still shown
    assert not re.search(r"(src|href)=\"(https?:)?//", page_path.read_text())  # nothing external


def test_diagnostics_apart_judged_number_first_and_markdown_twin(tmp_path):
    folder = fake_figures(tmp_path / "figures")
    many = {f"key{i}": i / 7 for i in range(30)}  # a dozen keys and more: folded behind the judged number
    write_json(folder / "richness-fig2.claims.json", [
        dict(claim="paper claim", measured=many, expected="gap <= 5", judged="gap 7.5", holds=False, data="cifar10",
             diagnosis="the authors' code trains otherwise"),
        dict(claim="held claim", measured=1.0, expected="x", judged="1 point", holds=True, data="cifar10",
             diagnosis="a diagnosis of a claim that holds is not shown"),
        dict(claim="search attacks agree", measured={"share": 0.8}, expected=">= 95%", holds=False, data="cifar10",
             diagnostic=True)])
    page_path = build_report(folder, tmp_path / "report")
    text = " ".join(Page(page_path.read_text()).text)
    missing = len(figure_ids()) - 2
    assert f"3 of 5 claims hold: 1/2 on real data, 2/3 on toy data; {missing} figures missing" in text
    assert "checks of our own machinery (diagnostics, not counted)" in text and "search attacks agree" in text
    assert "gap 7.5" in text and "all numbers" in text and "Why: the authors' code trains otherwise" in text
    assert "<th>ours</th>" in page_path.read_text()  # the judged number first, under "ours"
    markdown = (tmp_path / "report" / "RESULTS.md").read_text()
    assert "| paper claim<br>*Why:* the authors' code trains otherwise | gap 7.5 | gap <= 5 | **fails** |" in markdown
    assert "| diagnostic (not counted) | ours | expected | verdict |" in markdown
    assert "### richness-fig1: missing" in markdown and "1 of 2 claims hold" in markdown
    assert "not shown" not in text and "not shown" not in markdown  # a diagnosis only where the claim fails


def test_unreadable_claims_are_reported_not_fatal(tmp_path):
    figures = fake_figures(tmp_path / "figures")
    (figures / "pe-fig1.claims.json").write_text('[{"claim": "half')
    text = " ".join(Page(build_report(figures, tmp_path / "report").read_text()).text)
    assert "pe-fig1.claims.json is unreadable (JSONDecodeError)" in text
    assert "1 of 2 claims hold: 1/2 on real data;" in text


def test_format_value():
    assert format_value({"a": [1, 0.123456], "b": "inf", "c": None, "d": True}) == "a: [1, 0.1235], b: inf, c: NaN, d: true"


def test_cli_uses_the_output_dir_root(tmp_path, capsys):
    fake_figures(tmp_path / "out" / "figures")
    assert main(["--output-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report" / "index.html").exists()
    assert (tmp_path / "out" / "report" / "img" / "pe-fig1.png").exists()
    assert "3 of 5 claims hold" in capsys.readouterr().out
    assert main(["--figures", str(tmp_path / "nowhere"), "--out", str(tmp_path / "empty")]) == 0
    assert f"0 of 0 claims hold; {len(figure_ids())} figures missing" in capsys.readouterr().out


def load_in_chromium(page: Path, tmp_path: Path) -> tuple[dict[str, int], list[str]]:
    """Open ``page`` in headless chromium inside an iframe of a wrapper page that records, for every image of the
    page, its naturalWidth (0: did not decode); the wrapper's DOM is read back with --dump-dom. Returns
    {src: naturalWidth} and the console lines chromium logged (errors, uncaught exceptions)."""
    wrapper = tmp_path / "wrapper.html"
    wrapper.write_text(
        '<!DOCTYPE html><html><body><pre id="result">not loaded</pre><script>'
        "function check() { var doc = document.getElementById('page').contentDocument;"
        " document.getElementById('result').textContent = Array.from(doc.images).map(function (img) {"
        " return 'IMG ' + img.getAttribute('src') + ' ' + (img.complete ? img.naturalWidth : -1); }).join('\\n')"
        " + '\\nDONE'; }</script>"
        f'<iframe id="page" src="{page.as_uri()}" onload="check()"></iframe></body></html>')
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--allow-file-access-from-files",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", wrapper.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert "DONE" in result.stdout, (result.stdout[-2000:], result.stderr[-2000:])
    images = {src: int(width) for src, width in re.findall(r"IMG (\S+) (-?\d+)", result.stdout)}
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return images, console


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (`make browser` installs Debian's "
                                                              "chromium; .ci/run does so first)")


@needs_chromium
def test_report_loads_in_a_browser_with_every_image_and_no_console_error(tmp_path):
    page = build_report(fake_figures(tmp_path / "figures"), tmp_path / "report")
    images, console = load_in_chromium(page, tmp_path)
    assert console == []
    assert sorted(images) == ["img/pe-fig1.png", "img/richness-fig2.png"]
    assert all(width > 0 for width in images.values()), images


@needs_chromium
def test_the_browser_check_catches_a_broken_image_and_a_script_error(tmp_path):
    page = build_report(fake_figures(tmp_path / "figures", corrupt_image=True), tmp_path / "report")
    page.write_text(page.read_text().replace("</body>", "<script>notDefined();</script></body>"))
    images, console = load_in_chromium(page, tmp_path)
    assert images["img/pe-fig1.png"] <= 0 and images["img/richness-fig2.png"] > 0
    assert any("notDefined" in line for line in console), console


def test_cli_module_runs(tmp_path):
    fake_figures(tmp_path / "figures")
    result = subprocess.run([sys.executable, "-m", "pexp.report", "--figures", str(tmp_path / "figures"), "--out",
                             str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == str(tmp_path / "r" / "index.html")
