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
