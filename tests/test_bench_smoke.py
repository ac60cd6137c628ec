"""Smoke test of the speed suite (bench/speed/suite.py, `python -m bench`): every row runs at tiny
sizes, the table and its JSON have the documented structure, and every ratio is a positive finite
number."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from bench.speed import suite as R

TINY = dataclasses.replace(R.QUICK, mode="tiny", compile_T=(8,), compile_sample=4, noisy_device="fake_manila",
                           noisy_sequences=1, naive_bindings=3, exact_batch=4, trips_new_tokens=2)


@pytest.fixture(scope="module")
def model():
    return R.load_model()


def _sane(rows, keys):
    assert [r.key for r in rows] == keys
    for r in rows:
        assert math.isfinite(r.ratio) and r.ratio > 0, r
        assert math.isfinite(r.qssm) and r.qssm > 0 and math.isfinite(r.other) and r.other > 0, r
        assert r.met in (True, False, None) and (r.met is None) == (r.goal == "")
        assert len(r.cells()) == 6


def test_compile_rows(model):
    rows = R.rows_compile(model, TINY)
    _sane(rows, ["a1", "a2"])
    assert rows[0].extra == {"T": 8, "sampled_tokens": 4, "transpiles_once": 4, "transpiles_naive": 32}
    assert "4 of 8 tokens" in rows[0].note


def test_noisy_rows():
    rows = R.rows_noisy(TINY)
    _sane(rows, ["b1", "b2"])
    extra = rows[0].extra
    assert extra["naive_bindings"] == 3 and len(extra["naive_job_seconds"]) == 3
    # one sequence of T=16: layer 1 from the 16-token table (x4 subcircuits) + layer 2's unique rows
    assert 64 < extra["qssm_bindings"] <= 128
    assert extra["max_abs_diff"] < 5 * math.sqrt(2 / TINY.noisy_shots)


def test_exact_rows(model):
    rows = R.rows_exact(model, TINY)
    _sane(rows, ["c1", "c2", "c3", "c4"])
    assert rows[0].extra["err_pennylane"] < 1e-5 and rows[0].extra["err_pipeline"] < 1e-5
    assert rows[3].ratio_def == "qssm/floor" and rows[3].extra["err_floor"] < 1e-10


def test_round_trip_rows(model):
    rows = R.rows_trips(model, TINY)
    _sane(rows, ["d1", "d2", "d3", "d4"])
    L, naive_prefill = model.cfg.n_layers, 16 * model.cfg.n_layers * 4
    assert [r.qssm for r in rows] == [L, L, L - 1, L - 1]
    assert rows[0].other == naive_prefill and all(r.met for r in rows)


def test_cli_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    R.main(["--quick", "--rows", "d", "--json", str(out)])
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0].startswith("qssm bench") and "1 thread" in lines[0]
    assert lines[1].split()[:3] == ["row", "measurement", "qssm"]
    assert sum(ln.startswith("d") for ln in lines) == 4
    data = json.loads(out.read_text())
    assert set(data) == {"environment", "settings", "rows"}
    assert data["settings"]["mode"] == "quick" and len(data["rows"]) == 4
    assert all(math.isfinite(r["ratio"]) and r["ratio"] > 0 for r in data["rows"])


@pytest.mark.slow
def test_dm_rows():
    """Row e at tiny sizes (braket_dm and two LocalClusters take most of a minute)."""
    tiny = dataclasses.replace(TINY, dm_sequences=1, dm_braket_sequences=1, dm_qlam_images=4, dm_repeats=1,
                               cluster_sequences=2, cluster_large=4)
    _sane(R.rows_dm(tiny), ["e1", "e2", "e3", "e4", "e5"])
