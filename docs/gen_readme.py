"""Regenerate the command outputs shown in README.md: every block between

    <!-- output: qssm ARGS -->
    ```
    ...
    ```
    <!-- /output -->

is replaced by what `qssm ARGS` prints now. `python docs/gen_readme.py` rewrites README.md;
`--check` exits 1 and names the blocks that differ (tests/test_readme.py runs the same check).

Times differ from run to run, so the check compares every "N.N s" as "? s" and a run's "wall time" line
(which lists the stages that took 0.05 s or more) not at all; everything else (accuracy, logit errors,
counts, qubits, transpilation) must match exactly: the commands are seeded.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- output: (?P<command>qssm [^>]*?) -->\n```\n)(?P<body>.*?)(```\n<!-- /output -->)", re.S)
SECONDS = re.compile(r"\d+(\.\d+)? s\b")
WALL = re.compile(r"^(\s*wall time\s+).*$", re.M)


def run(command: str) -> str:
    """What `command` prints on stdout, run from the repository root; an --out directory is made in
    a temporary folder and named in the output as written in the README."""
    args = shlex.split(command)[1:]
    with tempfile.TemporaryDirectory() as tmp:
        shown = None
        if "--out" in args:
            i = args.index("--out") + 1
            shown, args[i] = args[i], str(Path(tmp) / "out")
        env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
        p = subprocess.run([sys.executable, "-m", "qssm.cli", *args], cwd=ROOT, capture_output=True, text=True,
                           env=env, timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"`{command}` failed: {p.stderr.strip()}")
        out = p.stdout
        if shown is not None:
            out = out.replace(str(Path(tmp) / "out"), shown)
    return out


def blocks(text: str) -> list[tuple[str, str]]:
    """(command, body) of every output block in `text`."""
    return [(m["command"], m["body"]) for m in BLOCK.finditer(text)]


def masked(text: str) -> str:
    return SECONDS.sub("? s", WALL.sub(r"\1?", text))


def regenerate(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + run(m["command"]) + m.group(4), text)


def main(argv: list[str]) -> int:
    text = README.read_text()
    if "--check" in argv:
        stale = [c for c, body in blocks(text) if masked(body) != masked(run(c))]
        for c in stale:
            print(f"README.md: the output of `{c}` is stale; run python docs/gen_readme.py")
        return 1 if stale else 0
    README.write_text(regenerate(text))
    print(f"README.md: {len(blocks(text))} command outputs regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
