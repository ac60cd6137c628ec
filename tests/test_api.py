"""The README's Python example runs as written (qssm/api.py), and `import qssm` stays light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    code = readme_example().replace("/tmp/qssm-api-example.sqlite", str(tmp_path / "jobs.sqlite"))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("torch.Size([8, ") and lines[-1] == "done"


def test_import_qssm_loads_no_torch():
    code = "import sys, qssm; assert qssm.__version__; print('torch' in sys.modules, 'qiskit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_the_api_names_resolve():
    import qssm

    for name in ("prepare", "run", "estimate", "submit", "job", "load", "logits", "spec", "Job", "Inference"):
        assert getattr(qssm, name) is not None
