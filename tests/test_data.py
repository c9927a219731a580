"""Data: CIFAR-10 layout and checksums, clear errors when missing, the synthetic stand-in."""
import pickle
import warnings

import numpy as np
import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from pexp.errors import ConfigError, DataError
from pexp.data import data_root, load_dataset
from pexp.figures.compose import compose_experiment

CIFAR = dict(name="cifar2", root=None, classes=[0, 7], verify_checksums=True, download=False,
             n_train=None, n_test=None)


def fake_cifar(root, per_file=20):
    """A small file-compatible CIFAR-10 copy (not the official files: its checksums differ)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = list(rng.integers(0, 10, per_file))
        labels[:2] = [0, 7]
        data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        data[0, :] = 0
        data[1, :] = 255
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": labels, "batch_label": name, "filenames": []}, handle)
    return folder


def test_missing_cifar_says_where_it_looked_and_how_to_provide_it(tmp_path):
    cfg = OmegaConf.create({**CIFAR, "root": str(tmp_path)})
    with pytest.raises(DataError) as error:
        load_dataset(cfg)
    text = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py") in text and "PEXP_DATA" in text
    assert "data=synthetic_cifar2" in text and "\n" not in text


def test_failed_download_is_reported(tmp_path, monkeypatch):
    class Refuse(torchvision.datasets.CIFAR10):  # the official file lists, but no download
        def __init__(self, *args, **kwargs):
            raise OSError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Refuse)
    cfg = OmegaConf.create({**CIFAR, "root": str(tmp_path), "download": True})
    with pytest.raises(DataError, match="download failed: OSError: no network"):
        load_dataset(cfg)


def test_data_root_wins_over_pexp_data(tmp_path, monkeypatch):
    """What a user types (data.root) wins over the environment (PEXP_DATA), which wins over ./data."""
    monkeypatch.setenv("PEXP_DATA", str(tmp_path / "env"))
    assert data_root(OmegaConf.create({"root": str(tmp_path / "cfg")})) == tmp_path / "cfg"
    assert data_root(OmegaConf.create({"root": None})) == tmp_path / "env"
    monkeypatch.delenv("PEXP_DATA")
    assert data_root(OmegaConf.create({"root": str(tmp_path / "cfg")})) == tmp_path / "cfg"
    assert str(data_root(OmegaConf.create({"root": None}))) == "data"


def test_training_reads_the_data_root_typed_on_the_command_line(tmp_path, monkeypatch):
    """``data.root=<folder>`` on the command line with PEXP_DATA set: the run looks in <folder>, not in PEXP_DATA's
    copy (the error for a folder without the files names <folder>)."""
    monkeypatch.setenv("PEXP_DATA", str(tmp_path / "env"))
    typed = tmp_path / "typed"
    cfg = compose_experiment("richness_fig2_all", [f"data.root={typed}", "data.download=false"])
    with pytest.raises(DataError, match=str(typed)) as error:
        load_dataset(cfg.data)
    assert str(tmp_path / "env") not in str(error.value)


def test_checksums_are_verified_by_default_and_the_switch_warns(tmp_path):
    fake_cifar(tmp_path)
    cfg = OmegaConf.create({**CIFAR, "root": str(tmp_path)})
    with pytest.raises(DataError, match="fail the official MD5 checksum.*data.verify_checksums=false"):
        load_dataset(cfg)
    cfg.verify_checksums = False
    with pytest.warns(UserWarning, match="not the official release"):
        data = load_dataset(cfg)
    assert data.source == "cifar10" and data.input_shape == (3, 32, 32)
    assert set(data.train.y.tolist()) == {0, 1}
    # the all-black image of class 0 maps to -1 and target 0; the all-white one of class 7 to +1 and target 1
    assert data.train.x[0].min() == -1 and data.train.y[0] == 0
    assert data.train.x[1].max() == 1 and data.train.y[1] == 1
    assert not data.test.extras["lossless"].any()  # an unofficial copy without a mask: not known to be exact


def test_the_environment_switch_applies_when_no_config_sets_the_key_and_the_command_line_wins(tmp_path, monkeypatch):
    fake_cifar(tmp_path)
    unset = compose_experiment("richness_fig2_first", [f"data.root={tmp_path}", "data.download=false"]).data
    assert "verify_checksums" not in unset
    monkeypatch.setenv("PEXP_VERIFY_CHECKSUMS", "false")
    with pytest.warns(UserWarning, match="not the official release"):
        load_dataset(unset)
    typed = compose_experiment("richness_fig2_first", [f"data.root={tmp_path}", "data.download=false",
                                                       "data.verify_checksums=true"]).data
    with pytest.raises(DataError, match="fail the official MD5 checksum"):
        load_dataset(typed)
    monkeypatch.setenv("PEXP_VERIFY_CHECKSUMS", "maybe")
    with pytest.raises(ConfigError, match="^PEXP_VERIFY_CHECKSUMS='maybe' is not allowed: must be true or false$"):
        load_dataset(unset)


def test_lossless_mask_beside_the_folder_is_used(tmp_path):
    fake_cifar(tmp_path)
    np.save(tmp_path / "cifar-10-batches-py.test_is_lossless.npy", np.arange(20) < 10)
    cfg = OmegaConf.create({**CIFAR, "root": str(tmp_path), "verify_checksums": False})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_dataset(cfg)
    index = data.test.extras["source_index"]
    assert torch.equal(data.test.extras["lossless"], index < 10)


def test_synthetic_stand_in_is_deterministic_two_class_and_in_range():
    cfg = OmegaConf.create(dict(name="synthetic_cifar2", n_train=200, n_test=50, rank=8, separation=3.0,
                                class_std=0.5, spread=1.5, noise=0.02, seed=3))
    first, second = load_dataset(cfg), load_dataset(cfg)
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.test.y, second.test.y)
    assert first.source == "synthetic" and first.input_shape == (3, 32, 32)
    assert first.train.x.min() >= -1 and first.train.x.max() <= 1
    assert first.train.y.bincount().tolist() == [100, 100]
    cfg.seed = 4
    assert not torch.equal(load_dataset(cfg).train.x, first.train.x)
    # low-dimensional: 8 patterns carry nearly all of the variance
    centred = first.train.x.flatten(1) - first.train.x.flatten(1).mean(0)
    variance = torch.linalg.svdvals(centred) ** 2
    assert variance[:8].sum() / variance.sum() > 0.9


def fake_mnist(root, n=12):
    """Small IDX files in torchvision's raw layout (not the official ones: their checksums differ)."""
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape) + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())
    return folder


MNIST = dict(name="mnist", root=None, digits=None, verify_checksums=True, download=False, n_train=None, n_test=None)


def test_missing_mnist_says_where_it_looked_and_how_to_provide_it(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset(OmegaConf.create({**MNIST, "root": str(tmp_path)}))
    text = str(error.value)
    assert str(tmp_path / "MNIST" / "raw") in text and "PEXP_DATA" in text and "synthetic_mnist" in text
    assert "\n" not in text


def test_mnist_idx_files_are_read_and_checksums_enforced(tmp_path):
    fake_mnist(tmp_path)
    with pytest.raises(DataError, match="fail the official MD5 checksum.*verify_checksums=false"):
        load_dataset(OmegaConf.create({**MNIST, "root": str(tmp_path)}))
    with pytest.warns(UserWarning, match="not the official release"):
        data = load_dataset(OmegaConf.create({**MNIST, "root": str(tmp_path), "verify_checksums": False,
                                              "digits": [3, 7]}))
    assert data.source == "mnist" and data.input_shape == (1, 28, 28)
    assert data.train.y.tolist() == [0, 1]  # digits 3 and 7 of 0..11 mod 10, relabelled by position
    raw = (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    image_3 = torch.tensor(list(raw[16 + 3 * 784: 16 + 4 * 784]), dtype=torch.float32) / 255
    assert torch.equal(data.train.x[0].flatten(), image_3)


@pytest.mark.parametrize("name,shape,low", [("synthetic_cifar10", (3, 32, 32), -1.0), ("synthetic_mnist", (1, 28, 28), 0.0)])
def test_ten_class_stand_ins(name, shape, low):
    from pexp import CONF_DIR

    cfg = OmegaConf.load(f"{CONF_DIR}/data/{name}.yaml")
    cfg.n_train, cfg.n_test = 200, 50
    data = load_dataset(cfg)
    assert data.input_shape == shape and data.source == "synthetic"
    assert torch.bincount(data.train.y).tolist() == [20] * 10 and data.train.x.min() >= low
