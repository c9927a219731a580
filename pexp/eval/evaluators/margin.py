"""``eval=margin``: margins of a train subset and of the test set."""
from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Optional

import pandas as pd
import torch
from omegaconf import DictConfig

from pexp.data import load_dataset
from pexp.eval.evaluators.common import _subset, register, run_of
from pexp.eval.margin import STAGES, SearchKeys, SearchSettings
from pexp.losses import Loss
from pexp.models import EntryNet
from pexp.runs import RunDir, write_csv
from pexp.schema import UNSET, integer


class Protocol(StrEnum):
    """The label a margin table carries: the accurate search (default) or the authors' protocol."""

    accurate = "accurate"
    authors = "authors"


@dataclass
class MarginConfig(SearchKeys):
    """eval=margin and eval=margin_authors (conf/eval/margin.yaml, margin_authors.yaml): the search settings
    (:data:`pexp.eval.margin.SearchKeys`) and the points searched."""

    name: str = "margin"
    protocol: Optional[Protocol] = UNSET
    n_train: Optional[int] = integer(None, ge=1, null=True)  # a seeded random subset of the training set; null: all
    n_test: Optional[int] = integer(None, ge=1, null=True)  # null or >= its size: the whole test set
    seed: int = integer(0, ge=0)


def margin_results(model: EntryNet, cfg: DictConfig, eval_cfg: DictConfig, out: RunDir,
                   progress: bool) -> pd.DataFrame:
    """Margins (the margin search the eval config sets) of a random train subset and of the test set: columns
    split, index, target, margin (inf: not flipped within eps_max), censored, eps_max, lossless, protocol, each
    attack's own value: ``pgd`` (the PGD bisection; inf where it found nothing at or below FMN's bound), ``fmn``
    (foolbox's minimal-norm attack, the first estimate; NaN where it did not run) and ``apgd`` (the APGD stage on
    the points both left unflipped; NaN where it did not run, inf where it found nothing), and ``stage``: which
    of them gave the margin (:data:`pexp.eval.margin.STAGES`)."""
    data = load_dataset(cfg.data)
    logits = Loss.from_config(cfg.loss).as_logits(model)  # one output: (threshold, f); simplex: minus distances
    search = SearchSettings.from_config(eval_cfg, progress=progress).build()
    frames = []
    for name, split, n in (("train", data.train, eval_cfg.n_train), ("test", data.test, eval_cfg.n_test)):
        part = out / f"{name}.csv"  # each split is kept as soon as it is done, so an interruption loses less
        if not part.exists():
            subset, index = _subset(split, n, int(eval_cfg.seed))
            torch.manual_seed(int(eval_cfg.seed))
            started = time.perf_counter()
            found = search(logits, subset.x, subset.y, details=True)
            margins = found["margin"]
            seconds = time.perf_counter() - started
            lossless = subset.extras.get("lossless", torch.ones(len(subset), dtype=torch.bool))
            write_csv(part, pd.DataFrame(dict(split=name, index=index.numpy(), target=subset.y.numpy(),
                                              margin=margins.numpy(), censored=torch.isinf(margins).numpy(),
                                              eps_max=float(eval_cfg.eps_max), lossless=lossless.numpy(),
                                              pgd=found["pgd"].numpy(), fmn=found["fmn"].numpy(),
                                              apgd=found["apgd"].numpy(),
                                              stage=[STAGES[i] for i in found["stage"].tolist()],
                                              protocol=eval_cfg.get("protocol", "accurate"))))
            out.record_sitting()
            censored = int(torch.isinf(margins).sum())
            before = int((~torch.isnan(found["apgd"])).sum())  # the points the APGD stage ran on
            stage = f" ({before} before the APGD stage)" if before else ""
            print(f"[pexp] margins of {len(subset)} {name} points of {run_of(out).path}: median "
                  f"{float(margins.median()):.4f}, {censored} not flipped within {eval_cfg.eps_max}{stage} "
                  f"({seconds:.1f}s)")
        frames.append(pd.read_csv(part))
    return pd.concat(frames, ignore_index=True)


register("margin", MarginConfig, margin_results)
