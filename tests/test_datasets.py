"""The standard-split loaders (models/datasets.py): IDX files written here and the installed ones,
CIFAR-10 batches built from foolbox's 20 real CIFAR-10 test images, token layouts, and the one-line
errors for missing or hostile data."""

import gzip
import importlib.util
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qssm.cli import main
from qssm.errors import QssmError
from qssm.models import datasets
from qssm.models.config import config_from_dict, config_to_json
from qssm.models.registry import preset
from qssm.models.tasks import check_task, task_shape, test_set, train_batches


@pytest.fixture(autouse=True)
def fresh_cache():
    datasets.idx_split.cache_clear()
    datasets.cifar_split.cache_clear()
    yield
    datasets.idx_split.cache_clear()
    datasets.cifar_split.cache_clear()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    head = bytes([0, 0, codes[array.dtype], array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    raw = head + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def fake_idx_dir(tmp_path: Path, n_train=6, n_test=4, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    split = {}
    for name, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        img, lab = datasets.IDX_NAMES[name]
        suffix = ".gz" if gz else ""
        write_idx(tmp_path / (img + suffix), images, gz)
        write_idx(tmp_path / (lab + suffix), labels, gz)
        split[name] = (images, labels)
    return split


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_read_back(tmp_path, monkeypatch, gz):
    split = fake_idx_dir(tmp_path, gz=gz)
    monkeypatch.setenv("QSSM_MNIST", str(tmp_path))
    batch = test_set({"name": "mnist", "tokens": "rows"})
    images, labels = split["test"]
    assert batch.inputs.shape == (4, 28, 28) and batch.inputs.dtype == torch.float32
    np.testing.assert_allclose(batch.inputs.numpy(), images / 255.0, rtol=1e-6)
    assert batch.targets.tolist() == labels.tolist()
    train = next(train_batches({"name": "mnist"}, 3, seed=0))
    assert train.inputs.shape == (3, 28, 28)


def test_token_layouts(tmp_path, monkeypatch):
    split = fake_idx_dir(tmp_path)
    monkeypatch.setenv("QSSM_MNIST", str(tmp_path))
    img = split["test"][0][1] / 255.0
    pixels = test_set({"name": "mnist", "tokens": "pixels"}).inputs[1]
    assert pixels.shape == (784, 1)
    np.testing.assert_allclose(pixels[:, 0].numpy(), img.reshape(-1), rtol=1e-6)  # raster order
    patches = test_set({"name": "mnist", "tokens": "patches", "patch": 7}).inputs[1]
    assert patches.shape == (16, 49)
    # token 5 = patch row 1, column 1: pixels 7..13 x 7..13, row-major inside the patch
    np.testing.assert_allclose(patches[5].numpy(), img[7:14, 7:14].reshape(-1), rtol=1e-6)
    for task, shape in (({"name": "mnist"}, 28), ({"name": "mnist", "tokens": "patches", "patch": 4}, 16),
                        ({"name": "fashion", "tokens": "pixels"}, 1)):
        check_task(task)
        assert task_shape(task) == {"features": shape, "classes": 10}
    with pytest.raises(QssmError, match="patch must be one of"):
        check_task({"name": "mnist", "tokens": "patches", "patch": 5})


def test_bad_idx_files(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x07\x01" + b"\x00" * 8)
    with pytest.raises(QssmError, match="not an IDX file"):
        datasets.read_idx(tmp_path / "x")
    write_idx(tmp_path / "y", np.zeros((3, 2), np.uint8))
    (tmp_path / "y").write_bytes((tmp_path / "y").read_bytes()[:-1])
    with pytest.raises(QssmError, match="truncated"):
        datasets.read_idx(tmp_path / "y")


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QSSM_MNIST", str(tmp_path))
    with pytest.raises(QssmError, match="make data"):
        test_set({"name": "mnist"})
    monkeypatch.setenv("QSSM_FASHION_MNIST", str(tmp_path))
    assert main(["train", "qlam-sfashion", "--steps", "20", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fashion data not found" in err[0] and "dataset-fashion-mnist" in err[0]
    assert not (tmp_path / "out" / "qlam-sfashion.safetensors").exists()


@pytest.mark.parametrize("name,first_test_label", [("mnist", 7), ("fashion", 9)])
def test_installed_standard_splits(name, first_test_label):
    """The real files `make data` installs: 60,000 / 10,000 28x28 images, every class about 10%."""
    try:
        datasets.idx_dir(name)
    except QssmError:
        pytest.skip(f"{name} not installed (make data)")
    for split, n in (("train", 60_000), ("test", 10_000)):
        images, labels = datasets.idx_split(name, split)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8 and labels.shape == (n,)
        counts = np.bincount(labels, minlength=10)
        assert len(counts) == 10 and counts.min() > 0.08 * n and counts.max() < 0.12 * n
    assert int(datasets.idx_split(name, "test")[1][0]) == first_test_label
    assert test_set({"name": name}).inputs.shape == (10_000, 28, 28)


# ---- CIFAR-10 -----------------------------------------------------------------------------------


def foolbox_cifar10() -> tuple[np.ndarray, np.ndarray]:
    """foolbox 3.3.4's 20 real CIFAR-10 test images (data/cifar10_<i>_<label>.png), read without
    importing foolbox (its own dependencies are not installed: `pip install --no-deps`)."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None:
        pytest.skip("foolbox not installed (make install adds it)")
    files = sorted((Path(spec.submodule_search_locations[0]) / "data").glob("cifar10_*.png"))
    assert len(files) == 20
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    labels = np.array([int(f.stem.split("_")[2]) for f in files])
    return images, labels


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray, protocol: int = 2) -> None:
    """The CIFAR-10 python format: data (N, 3072) uint8 channel-major, labels a list (bytes keys)."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    d = {b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in labels], b"data": data,
         b"filenames": [f"{i}.png".encode() for i in range(len(images))]}
    path.write_bytes(pickle.dumps(d, protocol=protocol))


@pytest.fixture
def cifar_dir(tmp_path):
    images, labels = foolbox_cifar10()
    write_batch(tmp_path / "test_batch", images, labels)
    for i in range(5):  # five training batches of four images, pickled by the newest protocol
        write_batch(tmp_path / f"data_batch_{i + 1}", images[4 * i:4 * i + 4], labels[4 * i:4 * i + 4], protocol=5)
    return tmp_path, images, labels


def test_cifar10_batches_from_real_images(cifar_dir, monkeypatch):
    root, images, labels = cifar_dir
    monkeypatch.setenv("QSSM_CIFAR10", str(root))
    rgb = test_set({"name": "cifar10", "color": "rgb"})
    assert rgb.inputs.shape == (20, 32, 96) and rgb.targets.tolist() == labels.tolist()
    # row token 5 of image 3: its 32 pixels, R G B interleaved
    np.testing.assert_allclose(rgb.inputs[3, 5].numpy(), images[3, 5].reshape(-1) / 255.0, rtol=1e-6)
    grey = test_set({"name": "cifar10", "color": "grey"})
    assert grey.inputs.shape == (20, 32, 32)
    pil_grey = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in images]) / 255.0
    assert np.abs(grey.inputs.numpy() - pil_grey).max() < 1.01 / 255  # PIL rounds luminance to integers
    train = next(train_batches({"name": "cifar10"}, 20, seed=0))
    assert sorted(train.targets.tolist()) == sorted(labels.tolist())
    assert task_shape({"name": "cifar10", "color": "rgb"})["features"] == 96
    assert preset("qlam-scifar").config.input_dim == 32
    # [data] path (root) is used in place of the environment variable
    monkeypatch.delenv("QSSM_CIFAR10")
    assert test_set({"name": "cifar10"}, root=str(root)).inputs.shape == (20, 32, 32)


def test_cifar10_never_runs_pickled_code(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(QssmError, match="refusing global"):
        datasets.cifar_split("test", str(tmp_path))
    assert not marker.exists()


def test_cifar10_missing_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("QSSM_CIFAR10", raising=False)
    assert main(["train", "qlam-scifar", "--steps", "20", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "QSSM_CIFAR10" in err[0] and "cifar-10-batches-py" in err[0]
    monkeypatch.setenv("QSSM_CIFAR10", str(tmp_path))
    with pytest.raises(QssmError, match="no test_batch"):
        test_set({"name": "cifar10"})


def test_standard_task_configs_round_trip():
    for name in ("qlam-smnist-full", "transformer-sfashion", "gru-scifar", "ssm-smnist-full"):
        cfg = preset(name).config
        assert config_from_dict(json.loads(config_to_json(cfg))) == cfg
