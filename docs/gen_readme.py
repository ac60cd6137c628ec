"""Regenerate the command outputs shown in README.md: every block between

    <!-- output: qssm ARGS -->
    ```
    ...
    ```
    <!-- /output -->

is replaced by what `qssm ARGS` prints now; the block after the README's Python example, marked
`<!-- output: python (the example above) -->`, by what that example prints; and a table between
`<!-- table: NAME ... -->` and `<!-- /table -->` by TABLES[NAME]: the accuracy tables and the model
card from stored JSON (docs/tables.py), the shots tables from bench/experiments/shots.json, the cost
table from `qssm estimate --json` per row. Every command runs from the repository root without
credentials (a fresh HOME, no AWS_ / IBM variables), so the outputs are the ones a new user sees.
`python docs/gen_readme.py` rewrites README.md; `--tables` only the tables built from stored JSON
(seconds); `--check` exits 1 and names the blocks that differ (tests/test_readme.py runs the same
check).

Times differ from run to run, so the check compares every "N.N s" as "? s" and a run's "wall time" line
(which lists the stages that took 0.05 s or more) not at all; everything else (accuracy, logit errors,
counts, qubits, transpilation) must match exactly: the commands are seeded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- output: (?P<command>qssm [^>]*?) -->\n```\n)(?P<body>.*?)(```\n<!-- /output -->)", re.S)
SECONDS = re.compile(r"\d+(\.\d+)? s\b")
WALL = re.compile(r"^(\s*wall time\s+).*$", re.M)

_spec = importlib.util.spec_from_file_location("tables", ROOT / "docs" / "tables.py")  # docs/ is not a package
tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tables)


def run(command: str) -> str:
    """What `command` prints on stdout, run from the repository root; an --out directory is made in
    a temporary folder and named in the output as written in the README."""
    args = shlex.split(command)[1:]
    with tempfile.TemporaryDirectory() as tmp:
        shown = None
        if "--out" in args:
            i = args.index("--out") + 1
            shown, args[i] = args[i], str(Path(tmp) / "out")
        p = subprocess.run([sys.executable, "-m", "qssm.cli", *args], cwd=ROOT, capture_output=True, text=True,
                           env=clean_env(tmp), timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"`{command}` failed: {p.stderr.strip()}")
        out = p.stdout
        if shown is not None:
            out = out.replace(str(Path(tmp) / "out"), shown)
    return out


def clean_env(home: str) -> dict:
    """The environment of a new user: no credentials (variables or saved accounts), one thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "QISKIT_IBM_", "IBM_QUANTUM_"))}
    return dict(env, HOME=home, OMP_NUM_THREADS="1", COLUMNS="200")


def blocks(text: str) -> list[tuple[str, str]]:
    """(command, body) of every output block in `text`."""
    return [(m["command"], m["body"]) for m in BLOCK.finditer(text)]


def table_blocks(text: str) -> list[tuple[str, str]]:
    """(name, body) of every generated table in `text`."""
    return [(m["name"], m["body"]) for m in TABLE.finditer(text)]


def json_table(name: str) -> Callable[[], str]:
    """docs/tables.py's table NAME (from stored JSON)."""
    return lambda: "\n".join(tables.TABLES[name]()) + "\n"


def shots_table(part: str) -> Callable[[], str]:
    """bench/experiments/shots.py's markdown table PART of its stored rows (columns, acceptance or frontier)."""
    def produce() -> str:
        p = subprocess.run([sys.executable, "-m", "bench.experiments.shots", "--table", "bench/experiments/shots.json",
                            "--part", part], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if p.returncode != 0:
            raise RuntimeError(f"the shots table failed: {p.stderr.strip()}")
        return p.stdout
    return produce


def masked(text: str) -> str:
    return SECONDS.sub("? s", WALL.sub(r"\1?", text))


# -- the Python example's output ----------------------------------------------------------------------
PYTHON = re.compile(r"(```python\n(?P<code>(?:(?!```).)*?)```\n<!-- output: (?P<command>python \(the example above\)) -->\n"
                    r"```\n)(?P<body>.*?)(```\n<!-- /output -->)", re.S)


def run_python(code: str) -> str:
    """What a README Python example prints, run from the repository root; paths under /tmp/ are
    moved into a temporary folder (the example writes a job store there)."""
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run([sys.executable, "-c", code.replace("/tmp/", f"{tmp}/")], cwd=ROOT, capture_output=True,
                           text=True, env=clean_env(tmp), timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"the README's Python example failed: {p.stderr.strip()}")
        return p.stdout


# -- tables of command outputs -------------------------------------------------------------------------
TABLE = re.compile(r"(<!-- table: (?P<name>[\w-]+)[^>]*-->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
KINGSTON, GARNET = "ibm:ibm_kingston", "braket:iqm_garnet"
# (label, spec, extra arguments, shots per circuit and their label): each row priced on both devices
COST_ROWS = [
    ("qlam-digits-chain (4)", "examples/braket-garnet.toml", [],
     [(4000, "4000 (before)"), (1000, "1000"), (250, "**250 (shipped)**"), (64, "64")]),
    ("qlam-digits-chain-noisy-fez (8)", "examples/ibm-kingston.toml", [],
     [(4000, "4000 (before)"), (250, "**250 (shipped)**"), (64, "64")]),
    ("qmamba-haystack (8)", "examples/demo.toml", ["--n", "8"], [(4000, "4000 (before)"), (250, "250")]),
]


def on_backend(spec: str, backend: str, tmp: str) -> str:
    """`spec` as it would run on `backend`: its IBM-only runtime options ([mitigation] twirling, ...)
    dropped for a Braket device, which refuses them (the price does not depend on them)."""
    raw = tomllib.loads((ROOT / spec).read_text())
    if backend.startswith("ibm:") or "mitigation" not in raw:
        return spec
    raw.pop("mitigation")
    path = Path(tmp) / Path(spec).name
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
                            for name, table in raw.items()))  # JSON scalars are TOML scalars
    return str(path)


ESTIMATES = """import contextlib, io, json, sys
from qssm.cli import main
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["estimate", *argv, "--json"])
    print(out.getvalue().strip() if code == 0 else json.dumps({"failed": argv}))
"""


def estimates(commands: list[list[str]]) -> list[dict]:
    """`qssm estimate ARGS --json` for each ARGS, without credentials, in one process (the imports
    once: 18 estimates in about 40 s instead of 4 minutes)."""
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run([sys.executable, "-c", ESTIMATES, json.dumps(commands)], cwd=ROOT, capture_output=True,
                           text=True, env=clean_env(tmp), timeout=1200)
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    failed = [r["failed"] for r in rows if "failed" in r]
    if p.returncode != 0 or failed or len(rows) != len(commands):
        raise RuntimeError(f"qssm estimate failed ({failed or p.stderr.strip()[-500:]})")
    return rows


def cost_table(rows=None) -> str:
    """Cost per example at each row's shots (COST_ROWS by default), on IBM Kingston and IQM Garnet;
    in bold, the price on the spec's own device at its shipped shots."""
    rows = COST_ROWS if rows is None else rows
    lines = [("| model (n) | shots per circuit | shots / example | IBM Kingston QPU s / example | IBM $ / example "
              "| Garnet $ / example | Garnet tasks / example |"),
             "| --- | --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        cells = [(label, spec, shown) for label, spec, _, shots in rows for _, shown in shots]
        commands = [[on_backend(spec, b, tmp), "--backend", b, "--shots", str(n), *extra]
                    for label, spec, extra, shots in rows for n, _ in shots for b in (KINGSTON, GARNET)]
        prices = estimates(commands)
    for (label, spec, shown), ibm, aws in zip(cells, prices[::2], prices[1::2]):
        # in bold: the price on the spec's own device at its shipped shots (a bold shots label)
        own = tomllib.loads((ROOT / spec).read_text())["backend"]["name"] if shown.startswith("**") else ""
        kingston = [_price(ibm[k], own == KINGSTON) for k in ("qpu_seconds_per_example", "usd_per_example")]
        lines.append(f"| {label} | {shown} | {ibm['shots_per_example']:,.0f} | {' | '.join(kingston)} "
                     f"| {_price(aws['usd_per_example'], own == GARNET)} | {aws['tasks_per_example']:.2f} |")
    return "\n".join(lines) + "\n"


def _price(value: float, bold: bool) -> str:
    return f"**{value:.2f}**" if bold else f"{value:.2f}"


JSON_TABLES: dict[str, Callable[[], str]] = {
    **{name: json_table(name) for name in tables.TABLES},
    "shots-columns": shots_table("columns"), "shots-acceptance": shots_table("acceptance"),
    "shots-frontier": shots_table("frontier"),
}
TABLES: dict[str, Callable[[], str]] = {"cost-per-example": cost_table, **JSON_TABLES}


# -- every generated part --------------------------------------------------------------------------------
def outputs(text: str) -> list[tuple[str, str, Callable[[], str]]]:
    """(name, body shown, what produces it now) of every generated part of `text`."""
    return ([(m["command"], m["body"], lambda c=m["command"]: run(c)) for m in BLOCK.finditer(text)]
            + [(m["command"], m["body"], lambda c=m["code"]: run_python(c)) for m in PYTHON.finditer(text)]
            + [(f"table {m['name']}", m["body"], TABLES[m["name"]]) for m in TABLE.finditer(text)])


def regenerate(text: str) -> str:
    text = BLOCK.sub(lambda m: m.group(1) + run(m["command"]) + m.group(4), text)
    text = PYTHON.sub(lambda m: m.group(1) + run_python(m["code"]) + m.group(5), text)
    return TABLE.sub(lambda m: m.group(1) + TABLES[m["name"]]() + m.group(4), text)


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"], ["--tables"]):
        print("usage: python docs/gen_readme.py [--check | --tables]", file=sys.stderr)
        return 2
    text = README.read_text()
    if "--tables" in argv:  # only the tables (no command runs): seconds, for a bench script's new JSON
        README.write_text(TABLE.sub(lambda m: m.group(1) + (JSON_TABLES.get(m["name"]) or (lambda: m["body"]))() + m.group(4), text))
        print(f"README.md: the tables from stored JSON regenerated")
        return 0
    if "--check" in argv:
        stale = [name for name, body, produce in outputs(text) if masked(body) != masked(produce())]
        for name in stale:
            print(f"README.md: the output of `{name}` is stale; run python docs/gen_readme.py")
        return 1 if stale else 0
    README.write_text(regenerate(text))
    print(f"README.md: {len(outputs(text))} command outputs regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
