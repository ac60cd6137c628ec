"""Every command output shown in README.md is what the command prints now (docs/gen_readme.py
writes them between <!-- output: ... --> markers; times are masked, every other number must match)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gen_readme", ROOT / "docs" / "gen_readme.py")
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)

BLOCKS = gen.blocks((ROOT / "README.md").read_text())


def test_readme_has_generated_blocks():
    commands = [c for c, _ in BLOCKS]
    assert "qssm run examples/demo.toml --out reports/demo" in commands  # the demo block (make demo)
    assert any(c.startswith("qssm compile") for c in commands)


@pytest.mark.parametrize("command,body", BLOCKS, ids=[c for c, _ in BLOCKS])
def test_readme_output_is_current(command, body):
    assert gen.masked(body) == gen.masked(gen.run(command)), "stale; run python docs/gen_readme.py"


def test_masking_keeps_every_number_but_times():
    """The check would have caught the stale demo block (logit error 3.10 / 0.827 against 3.05 / 0.718)."""
    a = "  logit error     max 3.10e+00   mean 8.27e-01\n  wall time       0.9 s (dispatch 0.6 s)\n"
    b = "  logit error     max 3.05e+00   mean 7.18e-01\n  wall time       3.1 s (transpile 0.5 s, split 0.2 s)\n"
    assert gen.masked(a) != gen.masked(b)
    assert gen.masked(a) == gen.masked(a.replace("0.9 s (dispatch 0.6 s)", "2.0 s (split 0.1 s)"))


TABLES = gen.table_blocks((ROOT / "README.md").read_text())


def test_readme_accuracy_tables_are_generated():
    """The model card and every accuracy table come from stored JSON (docs/tables.py)."""
    assert {name for name, _ in TABLES} == set(gen.tables.TABLES)


@pytest.mark.parametrize("name,body", TABLES, ids=[n for n, _ in TABLES])
def test_readme_table_is_current(name, body):
    assert body == gen.table(name), "stale; run python docs/gen_readme.py --tables"


def test_noise_cells_say_when_they_are_a_subset():
    """A device row on part of the test set names its n and never passes for the standard split."""
    row = {"accuracy": 0.95, "se": 0.005, "exact_accuracy": 0.96, "n": 2000, "subset": True, "shots": 337}
    assert "subset**: 2,000 of 10,000" in gen.tables._noise_cell(row)
    assert "all 10,000" in gen.tables._noise_cell({**row, "n": 10_000, "subset": False})
    assert "all 10,000" not in gen.tables._noise_cell({**row, "n": 10_000})  # no flag: not claimed
