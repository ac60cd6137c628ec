"""qssm/api.py: `import qssm` stays light and its names resolve. The README's Python example runs as
written, and prints what the README shows, in tests/test_readme.py (docs/gen_readme.py writes its output)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_qssm_loads_no_torch():
    code = "import sys, qssm; assert qssm.__version__; print('torch' in sys.modules, 'qiskit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_the_api_names_resolve():
    import qssm

    for name in ("prepare", "run", "estimate", "submit", "job", "load", "logits", "spec", "Job", "Inference"):
        assert getattr(qssm, name) is not None


def test_logits_standard_errors_match_the_spread_over_seeds():
    """qssm.logits on dm:fake_fez at 1000 shots: over seeds, each logit's spread is the standard
    error reported (each measured value's shot noise carried through the recurrence, pipeline/delta.py).
    A sample std over n seeds is within 1/sqrt(2(n-1)) of the true one (relative, one standard error);
    the mean over logits is too, however they correlate: 3 of those is the tolerance."""
    import torch

    import qssm

    model = qssm.load(ROOT / "checkpoints/qmamba-haystack.safetensors").double()
    tokens = torch.tensor([[3, 9, 9, 0, 1, 2], [5, 9, 4, 0, 1, 2], [7, 1, 9, 9, 3, 0]])
    seeds = 30
    logits, errors = zip(*(qssm.logits(model, tokens, backend="dm:fake_fez", shots=1000, seed=s)
                           for s in range(1, seeds + 1)))
    spread, reported = torch.stack(logits).std(0), torch.stack(errors).mean(0)
    assert (reported > 0).all() and torch.isfinite(reported).all()
    ratio = float((spread / reported).mean())
    assert abs(ratio - 1) < 3 / (2 * (seeds - 1)) ** 0.5, ratio
    exact, zero = qssm.logits(model, tokens)
    assert exact.shape == zero.shape and not zero.any()


def test_a_run_reports_its_logits_standard_errors():
    """qssm.run: zero standard errors on the exact backend; on a sampled dm: run (layer 1 read from
    the token table, measured at the run's shots) and an adaptive one, positive, one per logit."""
    import qssm

    exact = qssm.run("examples/exact.toml", n=2)
    assert exact.stderr.shape == exact.logits.shape and not exact.stderr.any()
    sampled = qssm.run("examples/demo.toml", n=2, shots=1000)
    assert sampled.stderr.shape == sampled.logits.shape and (sampled.stderr > 0).all()
    # adaptive rounds: each example's from its last round
    adaptive = qssm.run("examples/demo.toml", n=2, shots="auto")
    assert adaptive.stderr.shape == adaptive.logits.shape and (adaptive.stderr > 0).all()
    assert "logit_stderr" not in adaptive.report["adaptive"]
