import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TINY = [
    "data=synthetic_cifar2", "data.n_train=120", "data.n_test=60", "model.size=1", "train.epochs=2",
    "train.batch_size=20", "train.progress=false", "eval.n_train=20", "eval.n_test=20", "eval.resolution=0.005",
    "eval.steps=10", "eval.fmn_steps=20",
]


@pytest.fixture(autouse=True)
def no_real_data(monkeypatch):
    """Tests never read the user's data: PEXP_DATA is unset unless a test sets it."""
    monkeypatch.delenv("PEXP_DATA", raising=False)
    monkeypatch.delenv("PEXP_OUTPUT", raising=False)


@pytest.fixture
def tiny(tmp_path):
    """Overrides for a tiny synthetic run whose outputs go under tmp_path."""
    return [*TINY, f"paths.output_dir={tmp_path / 'outputs'}"]


@pytest.fixture
def one_thread():
    """Same thread count in this process as in the subprocesses (OMP_NUM_THREADS=1): same numbers."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_judged(claims: list[dict]) -> list[dict]:
    """Every claim carries the number its verdict judges (a short text the report shows first), and a diagnosis
    only where it fails."""
    for item in claims:
        assert isinstance(item.get("judged"), str) and item["judged"].strip(), item["claim"]
        assert "nan" not in item["judged"].lower().split(), item["judged"]
        assert "diagnosis" not in item or (not item["holds"] and item["diagnosis"].strip()), item["claim"]
    return claims
