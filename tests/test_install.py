"""A regular (non-editable) install works: build the wheel, install it into a fresh virtual
environment and run its `qssm` command. The dependencies are borrowed from this environment (a .pth
file) so nothing is downloaded but the build backend."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_a_working_qssm(tmp_path):
    src = tmp_path / "src"  # a clean copy of the tracked files: the build writes no egg-info here
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
                   check=True, timeout=600)
    wheel = next(wheels.glob("qssm-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()] or [sysconfig.get_paths()["purelib"]]
    Path(site, "zz_deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, timeout=300)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(py), "-c", "import qssm.commands, qssm.jobs; print(qssm.commands.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # the wheel's copy, not the source tree
    p = subprocess.run([str(venv / "bin" / "qssm"), "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "submit" in p.stdout and "generate" in p.stdout
    data = subprocess.run([str(py), "-c", "from qssm.backends import devices; import importlib.resources as r; "
                           "print(sorted(f.name for f in r.files('qssm.backends').joinpath('device_data').iterdir()))"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "iqm_garnet.json" in data.stdout, data.stderr
    # the main job from the installed command, in a clone (the spec and checkpoints are files of the clone)
    p = subprocess.run([str(venv / "bin" / "qssm"), "run", "examples/demo.toml", "--out", str(tmp_path / "rep")],
                       capture_output=True, text=True, env=env, cwd=src, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "on dm:fake_fez, 2000 shots" in p.stdout and "accuracy        1.000" in p.stdout, p.stdout
    assert (tmp_path / "rep" / "report.html").stat().st_size > 1000
