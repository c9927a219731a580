"""``python -m pexp.report [--output-dir DIR] [--figures DIR] [--out DIR]``: one static HTML page of every figure.

The page (``<out>/index.html``, images copied into ``<out>/img/``) opens offline: no external CSS, scripts or
fonts. One section per paper (R, PE, OM, TS): each figure's image, its claims (colour coded, with the data
source), the overrides and runs behind it and its run time (from ``<id>.meta.json``); a figure not made yet is
shown as missing with the command that makes it. A summary at the top counts the claims of the papers that hold, by data source; the checks of our own machinery
(diagnostics) are shown apart and not counted. ``<out>/RESULTS.md`` is the same in markdown.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pexp.figures import FIGURES
from pexp.runs import atomic_write, write_text

PAPERS = {"R": "Richness of Training Data Does Not Suffice (Nar & Sastry)",
          "PE": "Persistency of Excitation for Robustness of Neural Networks (Nar & Sastry)",
          "OM": "Adversarial Examples Exist in Two-Layer ReLU Networks for Low Dimensional Linear Subspaces "
                "(Melamed, Yehudai, Vardi)",
          "TS": "Tangent sensitivity of ReLU networks"}

REAL_DATA = {"cifar10", "mnist"}

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ccc; margin-top: 2em; }
section.figure { border: 1px solid #ddd; border-radius: 6px; padding: 0.5em 1em; margin: 1em 0; }
section.missing { background: #f6f6f6; color: #666; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
tr.holds td.verdict { background: #d4f4d4; color: #064d06; font-weight: bold; }
tr.fails td.verdict { background: #f8d2d2; color: #7a0b0b; font-weight: bold; }
.summary { font-size: 1.15em; padding: 0.6em 1em; background: #eef3fa; border-radius: 6px; }
.data-real { color: #064d06; } .data-synthetic { color: #8a4b00; } .data-toy { color: #1d4f8a; }
code, pre { background: #f4f4f4; padding: 0 0.2em; white-space: pre-wrap; }
.warning { color: #8a4b00; }
"""


def data_kind(data: Any) -> str:
    """real (CIFAR-10, MNIST), synthetic (a stand-in) or toy; a mix like "synthetic+toy" counts as its least real."""
    parts = set(str(data).split("+"))
    if "synthetic" in parts:
        return "synthetic"
    if parts <= REAL_DATA:
        return "real"
    return "toy"


def figure_ids() -> dict[str, str]:
    """Every figure id ``pexp.figures.FIGURES`` knows (the ids of FIGURES.md; a test checks it) with its paper, in
    paper order."""
    order = list(PAPERS)
    ids = {figure_id: figure.paper for figure_id, figure in FIGURES.items()}
    return dict(sorted(ids.items(), key=lambda item: order.index(item[1]) if item[1] in order else len(order)))


def format_value(value: Any) -> str:
    """Measured values as short text: numbers to 4 significant digits, dicts and lists item by item."""
    if isinstance(value, bool) or value is None:
        return "NaN" if value is None else str(value).lower()
    if isinstance(value, float):
        return str(value) if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{key}: {format_value(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    return str(value)


@dataclass
class FigureEntry:
    """What the report knows about one figure id."""

    id: str
    paper: str
    image: Path | None = None
    claims: list[dict] = field(default_factory=list)
    meta: dict | None = None
    problems: list[str] = field(default_factory=list)


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        problems.append(f"{path.name} is unreadable ({type(error).__name__}): ignored")
        return None


def read_figure(figures_dir: Path, figure_id: str, paper: str) -> FigureEntry:
    """The PNG, claims and meta of one figure (whatever of them exists; unreadable files become problems)."""
    entry = FigureEntry(figure_id, paper)
    png = figures_dir / f"{figure_id}.png"
    entry.image = png if png.is_file() else None
    claims = _read_json(figures_dir / f"{figure_id}.claims.json", entry.problems)
    if isinstance(claims, list):
        entry.claims = [item for item in claims if isinstance(item, dict)]
    elif entry.image is not None and claims is None and not entry.problems:
        entry.problems.append(f"{figure_id}.claims.json is missing")
    meta = _read_json(figures_dir / f"{figure_id}.meta.json", entry.problems)
    entry.meta = meta if isinstance(meta, dict) else None
    if entry.image is not None and entry.meta is None:
        entry.problems.append(f"{figure_id}.meta.json is missing (an older or interrupted figure run)")
    return entry


def paper_claims(entry: FigureEntry) -> list[dict]:
    """The claims of the papers (counted in the summary), not the checks of our own machinery."""
    return [item for item in entry.claims if not item.get("diagnostic")]


def diagnostics(entry: FigureEntry) -> list[dict]:
    """Checks of the project's own machinery (e.g. the margin search's attacks agreeing): shown apart."""
    return [item for item in entry.claims if item.get("diagnostic")]


SHORT = 90  # a measured value up to this many characters is shown whole; a longer one is folded


def headline(item: dict) -> str:
    """What the measured cell shows first: the number the claim judges, else the measured value when it is short."""
    if item.get("judged") is not None:
        return format_value(item["judged"])
    text = format_value(item.get("measured"))
    return text if len(text) <= SHORT else "(see all numbers)"


def summary(entries: Sequence[FigureEntry]) -> str:
    """E.g. "23 of 31 claims hold: 12/15 on real data, 11/16 on toy data; 3 figures missing"."""
    counts: dict[str, list[int]] = {}
    for entry in entries:
        if entry.image is None:
            continue
        for item in paper_claims(entry):
            tally = counts.setdefault(data_kind(item.get("data")), [0, 0])
            tally[0] += bool(item.get("holds"))
            tally[1] += 1
    held, total = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    parts = [f"{counts[kind][0]}/{counts[kind][1]} on {kind} data" for kind in ("real", "synthetic", "toy")
             if kind in counts]
    missing = sum(entry.image is None for entry in entries)
    text = f"{held} of {total} claims hold" + (": " + ", ".join(parts) if parts else "")
    return text + f"; {missing} figure{'s' if missing != 1 else ''} missing"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _seconds(value: Any) -> str:
    return "unknown" if not isinstance(value, (int, float)) else f"{value:.1f} s ({value / 60:.1f} min)"


def render_figure(entry: FigureEntry, image_name: str | None, known: bool) -> str:
    """One figure's section."""
    if entry.image is None:
        how = f"make reproduce FIG={entry.id}"
        note = "" if known else " (not implemented yet)"
        return (f'<section class="figure missing" id="{_e(entry.id)}"><h3>{_e(entry.id)}: missing</h3>'
                f"<p>Not made yet{_e(note)}. Command: <code>{_e(how)}</code></p></section>")
    meta = entry.meta or {}
    beyond = " (beyond the paper)" if meta.get("beyond_the_paper") else ""
    out = [f'<section class="figure" id="{_e(entry.id)}"><h3>{_e(entry.id)}{_e(beyond)}</h3>']
    if meta.get("what"):
        out.append(f"<p>{_e(meta['what'])}</p>")
    out.append(f'<img src="img/{_e(image_name)}" alt="{_e(entry.id)}">')
    for problem in entry.problems:
        out.append(f'<p class="warning">{_e(problem)}</p>')
    for title, items in (("claims", paper_claims(entry)),
                         ("checks of our own machinery (diagnostics, not counted)", diagnostics(entry))):
        if not items:
            continue
        out.append(f"<p><b>{_e(title)}</b></p><table class=\"claims\"><tr><th>claim</th><th>ours</th>"
                   "<th>expected</th><th>verdict</th><th>data</th></tr>")
        for item in items:
            holds = bool(item.get("holds"))
            kind = data_kind(item.get("data"))
            full = format_value(item.get("measured"))
            folded = (f"<details><summary>all numbers</summary>{_e(full)}</details>"
                      if headline(item) != full else "")
            diagnosis = (f"<br><i>Why: {_e(item['diagnosis'])}</i>" if item.get("diagnosis") and not holds else "")
            out.append(f'<tr class="{"holds" if holds else "fails"}"><td>{_e(item.get("claim", ""))}{diagnosis}</td>'
                       f'<td>{_e(headline(item))}{folded}</td><td>{_e(item.get("expected", ""))}</td>'
                       f'<td class="verdict">{"holds" if holds else "fails"}</td>'
                       f'<td class="data-{kind}">{_e(item.get("data", ""))} ({kind})</td></tr>')
        out.append("</table>")
    if meta:
        overrides = " ".join(meta.get("overrides") or []) or "(none)"
        out.append(f"<p>Overrides: <code>{_e(overrides)}</code><br>Made {_e(meta.get('created_utc', '?'))} in "
                   f"{_e(_seconds(meta.get('seconds')))}; training of its runs: "
                   f"{_e(_seconds(meta.get('train_seconds')))}; data: {_e(', '.join(meta.get('data') or []))}</p>")
        runs = meta.get("runs") or []
        if runs:
            out.append("<details><summary>runs (" + str(len(runs)) + ")</summary><table><tr><th>label</th>"
                       "<th>experiment</th><th>config hash</th><th>training</th><th>run dir</th></tr>")
            for run in runs:
                out.append(f"<tr><td>{_e(run.get('label'))}</td><td>{_e(run.get('experiment'))}</td>"
                           f"<td><code>{_e(run.get('hash'))}</code></td><td>{_e(_seconds(run.get('train_seconds')))}"
                           f"</td><td><code>{_e(run.get('run_dir'))}</code></td></tr>")
            out.append("</table></details>")
    out.append("</section>")
    return "".join(out)


def build_report(figures_dir: Path | str, out_dir: Path | str) -> Path:
    """Write ``<out_dir>/index.html`` (and copy the PNGs into ``<out_dir>/img/``); returns the page's path."""
    figures_dir, out_dir = Path(figures_dir), Path(out_dir)
    ids = figure_ids()
    entries = [read_figure(figures_dir, figure_id, paper) for figure_id, paper in ids.items()]
    images = {}
    for entry in entries:
        if entry.image is not None:
            images[entry.id] = f"{entry.id}.png"
            atomic_write(out_dir / "img" / images[entry.id], lambda tmp, src=entry.image: shutil.copyfile(src, tmp))
    body = [f"<h1>pexp: reproduced figures</h1><p class=\"summary\">{_e(summary(entries))}</p>",
            f"<p>Figures from <code>{_e(figures_dir)}</code>. Missing ones: <code>make reproduce FIG=&lt;id&gt;</code>"
            f", or all at once: <code>make reproduce-all</code>.</p>"]
    for paper in PAPERS:  # contents: every id, linked, marked missing where it is
        links = [f'<a href="#{_e(entry.id)}">{_e(entry.id)}</a>' + ("" if entry.image else " (missing)")
                 for entry in entries if entry.paper == paper]
        body.append(f"<p><b>{_e(paper)}</b>: {', '.join(links)}</p>")
    for paper, title in PAPERS.items():
        body.append(f'<h2 id="paper-{_e(paper)}">{_e(paper)}: {_e(title)}</h2>')
        body.extend(render_figure(entry, images.get(entry.id), entry.id in FIGURES)
                    for entry in entries if entry.paper == paper)
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pexp report</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    write_text(out_dir / "RESULTS.md", markdown_report(entries, figures_dir))
    return write_text(out_dir / "index.html", page)


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_report(entries: Sequence[FigureEntry], figures_dir: Path) -> str:
    """The page as markdown (``RESULTS.md``): per paper and figure, what it shows, its claims with the judged
    number beside the expected one and the verdict, why a failing claim fails where that is known, and its
    diagnostics apart."""
    lines = ["# pexp: reproduced figures", "", f"Generated from `{figures_dir}` by `make report`. "
             f"{summary(entries)}.", ""]
    for paper, title in PAPERS.items():
        lines += [f"## {paper}: {title}", ""]
        for entry in (entry for entry in entries if entry.paper == paper):
            if entry.image is None:
                lines += [f"### {entry.id}: missing", "", f"Not made yet: `make reproduce FIG={entry.id}`.", ""]
                continue
            meta = entry.meta or {}
            held = sum(bool(item.get("holds")) for item in paper_claims(entry))
            lines += [f"### {entry.id}", "", _md(meta.get("what", "")), "",
                      f"{held} of {len(paper_claims(entry))} claims hold; data: {', '.join(meta.get('data') or [])}; "
                      f"made in {_seconds(meta.get('seconds'))}.", ""]
            for caption, items in (("claim", paper_claims(entry)), ("diagnostic (not counted)", diagnostics(entry))):
                if not items:
                    continue
                lines += [f"| {caption} | ours | expected | verdict |", "|---|---|---|---|"]
                for item in items:
                    verdict = "holds" if item.get("holds") else "**fails**"
                    why = f"<br>*Why:* {item['diagnosis']}" if item.get("diagnosis") and not item.get("holds") else ""
                    lines.append(f"| {_md(item.get('claim', ''))}{_md(why)} | {_md(headline(item))} | "
                                 f"{_md(item.get('expected', ''))} | {verdict} |")
                lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pexp.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=os.environ.get("PEXP_OUTPUT") or "outputs",
                        help="the paths.output_dir root (default outputs, or $PEXP_OUTPUT)")
    parser.add_argument("--figures", help="the figures folder (default <output-dir>/figures)")
    parser.add_argument("--out", help="where the page goes (default <output-dir>/report)")
    args = parser.parse_args(argv)
    root = Path(args.output_dir)
    figures_dir = Path(args.figures) if args.figures else root / "figures"
    if not figures_dir.is_dir():
        print(f"[pexp] warning: {figures_dir} does not exist: every figure is shown as missing", file=sys.stderr)
    page = build_report(figures_dir, Path(args.out) if args.out else root / "report")
    entries = [read_figure(figures_dir, i, p) for i, p in figure_ids().items()]
    print(f"[pexp] report: {summary(entries)}\n{page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
