"""The numbers the README shows (docs/tables.py builds them from bench/*.json) still hold: a sample
of stored rows is measured again with today's code and each must lie within 2 standard errors of
the stored value (the standard error of the re-measurement and the stored one combined; exact
deterministic rows re-measured on the same examples must match to that tolerance too).

Slow (minutes): `pytest -m slow tests/test_stored_numbers.py`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from qssm.app.inference import run, run_inference
from qssm.app.job import prepare
from qssm.jobs.spec import parse_spec
from qssm.models import checkpoint
from qssm.models.tasks import TEST_SEED, Batch, test_set
from qssm.models.train import accuracy, predict

ROOT = Path(__file__).resolve().parents[1]
EVALS = json.loads((ROOT / "bench" / "generate" / "model_evals.json").read_text())
PAPER = json.loads((ROOT / "bench" / "generate" / "paper_benchmarks.json").read_text())
NOISE = json.loads((ROOT / "bench" / "experiments" / "paper_noise.json").read_text())

pytestmark = pytest.mark.slow


def se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1 / n) / n)  # a floor of one example: p = 1 stays testable


def within_two_se(got: float, n_got: int, stored: float, n_stored: int, same_examples: bool) -> None:
    """Same examples (a deterministic exact run): the stored number's own error bar; a fresh sample:
    both, combined."""
    tol = 2 * (se(stored, n_stored) if same_examples else math.hypot(se(got, n_got), se(stored, n_stored)))
    assert abs(got - stored) <= tol, f"measured {got:.4f} (n={n_got}), stored {stored:.4f} (n={n_stored}), tol {tol:.4f}"


def model(name: str):
    return checkpoint.load(ROOT / "checkpoints" / f"{name}.safetensors")[0].eval()


@pytest.mark.parametrize("name", ["gru-digits", "qlam-digits-chain", "qlam-smnist-chain"])
def test_exact_test_split_rows(name):
    m, stored = model(name), EVALS[name]["seeds"][str(TEST_SEED)]
    batch = test_set(m.cfg.task, TEST_SEED)
    with torch.no_grad():
        got = accuracy(predict(m, batch), batch.targets)
    within_two_se(got, len(batch.targets), stored["accuracy"], stored["n_examples"], same_examples=True)


def test_haystack_long_sweep_row():
    """The T=256 cell of qmamba-haystack-varlen: two of its unseen seeds measured again."""
    m, sweep = model("qmamba-haystack-varlen"), EVALS["qmamba-haystack-varlen"]["sweeps"]["256"]
    for seed in list(sweep["seeds"])[:2]:
        batch = test_set(m.cfg.task, int(seed), T=256)
        with torch.no_grad():
            got = accuracy(predict(m, batch), batch.targets)
        within_two_se(got, len(batch.targets), sweep["seeds"][seed], sweep["n_examples"], same_examples=True)


@pytest.mark.parametrize("name", ["qlam-smnist-full", "qlam-sfashion", "gru-sfashion"])
def test_standard_split_rows_on_a_sample(name):
    """Exact accuracy on the 10,000-image test set, re-measured on 2,000 of its images drawn at random."""
    m, stored = model(name), PAPER[name]
    batch = test_set(m.cfg.task, TEST_SEED)
    idx = torch.randperm(len(batch.targets), generator=torch.Generator().manual_seed(0))[:2000]
    with torch.no_grad():
        got = accuracy(predict(m, Batch(batch.inputs[idx], batch.targets[idx], {})), batch.targets[idx])
    within_two_se(got, len(idx), stored["accuracy"], stored["n"], same_examples=False)


def run_noisy(name: str, device: str, n: int, shots: int) -> dict:
    spec = parse_spec({"model": {"checkpoint": str(ROOT / "checkpoints" / f"{name}.safetensors")}, "data": {"n": n},
                       "backend": {"name": f"dm:{device}", "shots": shots, "seed_simulator": 1}})
    return run_inference(spec, progress=False)


def test_model_card_noisy_row():
    """qlam-digits-chain on dm:fake_fez as the card ran it (first 200 images, 4000 shots)."""
    stored = EVALS["qlam-digits-chain"]["noisy"]["fake_fez"]
    r = run_noisy("qlam-digits-chain", "fake_fez", stored["n_examples"], stored["shots"])
    within_two_se(r["accuracy"], r["n_examples"], stored["accuracy"], stored["n_examples"], same_examples=False)


@pytest.mark.parametrize("name", ["qlam-smnist-full", "qlam-sfashion"])
def test_paper_noise_row(name):
    """The fake_fez column of the paper table (bench/experiments/paper_noise.py): 100 images of its first
    chunk (every 20th test image) through the pipeline again at the stored shots, against the stored
    decisions on the same images (both noisy: the two standard errors combined), and the stored
    pooled accuracy against its chunks."""
    stored = NOISE[name]["fake_fez"]
    chunk = json.loads((ROOT / "bench" / "experiments" / "paper_noise_chunks" / name / "fake_fez" / "chunk00of20.json").read_text())
    spec = parse_spec({"model": {"checkpoint": str(ROOT / "checkpoints" / f"{name}.safetensors")},
                       "data": {"n": 2000}, "backend": {"name": "dm:fake_fez", "shots": stored["shots"]}})
    with prepare(spec) as job:
        idx = torch.arange(0, 2000, 20)  # chunk 0's first 100 images
        data = Batch(job.data.inputs[idx], job.data.targets[idx], {})
        got = run(dataclasses.replace(job, data=data), progress=False).report["accuracy"]
    targets = data.targets.tolist()
    was = sum(d == t for d, t in zip(chunk["decisions"][:100], targets)) / 100
    within_two_se(got, 100, was, 100, same_examples=False)
    chunks = [json.loads(p.read_text()) for p in (ROOT / "bench" / "experiments" / "paper_noise_chunks" / name / "fake_fez").glob("chunk*")]
    assert stored["n"] == sum(c["n"] for c in chunks)
    assert stored["accuracy"] == sum(c["correct"] for c in chunks) / stored["n"]
