"""Every command output shown in README.md is what the command prints now (docs/gen_readme.py
writes them between <!-- output: ... --> / <!-- table: ... --> markers; times are masked, every other
number must match), and every fenced block that is not generated is one that shows no output."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

from qssm.cli import main

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gen_readme", ROOT / "docs" / "gen_readme.py")
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)

README = (ROOT / "README.md").read_text()
BLOCKS = gen.blocks(README)
OUTPUTS = gen.outputs(README)
LIVE = [o for o in OUTPUTS if not o[0].startswith("table ")]  # the tables: 18 estimates, checked below in part
# fenced blocks that show no command's output, by their first line (what they are)
NOT_OUTPUT = {
    "make demo   # installs": "the two commands to type",
    "qssm train PRESET [--baselines]": "the command list (test_command_list_matches_the_cli)",
    "row  measurement": "make bench's table, from bench/results.json (the benchmark scripts' own)",
    "qssm train qmamba-haystack-varlen --noise": "commands to type",
}


def test_readme_has_generated_blocks():
    commands = [c for c, _ in BLOCKS]
    assert "qssm run examples/demo.toml --out reports/demo" in commands  # the demo block (make demo)
    assert any(c.startswith("qssm compile") for c in commands)
    assert "qssm estimate examples/braket-garnet.toml" in commands
    assert {name for name, _, _ in OUTPUTS} >= {"python (the example above)", "table cost-per-example"}


@pytest.mark.parametrize("name,body,produce", LIVE, ids=[o[0] for o in LIVE])
def test_readme_output_is_current(name, body, produce):
    assert gen.masked(body) == gen.masked(produce()), "stale; run python docs/gen_readme.py"


def test_every_fenced_block_is_generated_or_shows_no_output():
    """A new block of command output fails here until docs/gen_readme.py writes it."""
    generated = [m.span() for pattern in (gen.BLOCK, gen.PYTHON, gen.TABLE) for m in pattern.finditer(README)]
    unexplained = []
    for m in re.finditer(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```$", README, re.S | re.M):
        if m["lang"] in ("toml", "python") or any(a <= m.start() < b for a, b in generated):
            continue  # a spec to copy, the Python example (its output is generated), generated output
        first = m["body"].splitlines()[0] if m["body"] else ""
        if not any(first.startswith(k) for k in NOT_OUTPUT):
            unexplained.append(first)
    assert not unexplained, f"fenced blocks neither generated nor listed in NOT_OUTPUT: {unexplained}"
    for key in NOT_OUTPUT:  # the list names blocks that exist
        assert re.search(r"^```\w*\n" + re.escape(key), README, re.M), key


def test_cost_table_rows_are_the_generators_and_the_shipped_rows_are_current():
    """The cost table is 18 estimates (about 45 s): its rows are COST_ROWS in order, and the rows at
    the shipped settings are priced again here; `python docs/gen_readme.py --check` (and the slow
    test below) price every row."""
    [(_, body, _)] = [o for o in OUTPUTS if o[0] == "table cost-per-example"]
    lines = body.splitlines()
    assert [tuple(r.split(" | ")[:2]) for r in lines[2:]] == [
        (f"| {label}", shown) for label, _, _, shots in gen.COST_ROWS for _, shown in shots]
    shipped = [(label, spec, extra, [s for s in shots if s[1].startswith("**")]) for label, spec, extra, shots in gen.COST_ROWS]
    fresh = gen.cost_table([r for r in shipped if r[3]]).splitlines()
    assert fresh[2:] and all(line in lines for line in fresh), fresh


@pytest.mark.slow
def test_cost_table_is_current():
    [(_, body, produce)] = [o for o in OUTPUTS if o[0] == "table cost-per-example"]
    assert body == produce()


def test_command_list_matches_the_cli():
    """Every command and flag in the README's command list is one `qssm CMD --help` names."""
    block = re.search(r"## Command line\n\n```\n(.*?)```", README, re.S).group(1)
    for line in block.splitlines():
        if not line.startswith("qssm "):
            continue
        usage = line.split("#")[0]
        words = usage.split()
        command = words[1:3] if words[1] == "store" else words[1:2]
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            main([*command, "--help"])
        flags = set(re.findall(r"--[\w-]+", usage))
        missing = {f for f in flags if f not in out.getvalue()}
        assert not missing, f"qssm {' '.join(command)} has no {sorted(missing)}"


def test_masking_keeps_every_number_but_times():
    """The check would have caught the stale demo block (logit error 3.10 / 0.827 against 3.05 / 0.718)."""
    a = "  logit error     max 3.10e+00   mean 8.27e-01\n  wall time       0.9 s (dispatch 0.6 s)\n"
    b = "  logit error     max 3.05e+00   mean 7.18e-01\n  wall time       3.1 s (transpile 0.5 s, split 0.2 s)\n"
    assert gen.masked(a) != gen.masked(b)
    assert gen.masked(a) == gen.masked(a.replace("0.9 s (dispatch 0.6 s)", "2.0 s (split 0.1 s)"))


TABLES = [(n, b) for n, b in gen.table_blocks((ROOT / "README.md").read_text()) if n in gen.JSON_TABLES]


def test_readme_accuracy_tables_are_generated():
    """The model card, every accuracy table and the shots tables come from stored JSON (docs/tables.py,
    bench/experiments/shots.json)."""
    assert {name for name, _ in TABLES} == set(gen.JSON_TABLES)


@pytest.mark.parametrize("name,body", TABLES, ids=[n for n, _ in TABLES])
def test_readme_table_is_current(name, body):
    assert body == gen.JSON_TABLES[name](), "stale; run python docs/gen_readme.py --tables"


def test_noise_cells_say_when_they_are_a_subset():
    """A device row on part of the test set names its n and never passes for the standard split."""
    row = {"accuracy": 0.95, "se": 0.005, "exact_accuracy": 0.96, "n": 2000, "subset": True, "shots": 337}
    assert "subset**: 2,000 of 10,000" in gen.tables._noise_cell(row)
    assert "all 10,000" in gen.tables._noise_cell({**row, "n": 10_000, "subset": False})
    assert "all 10,000" not in gen.tables._noise_cell({**row, "n": 10_000})  # no flag: not claimed
