"""qssm devices: every target with qubits, native gates, snapshot date and price source; an unknown
device name answers in one line that points at it."""

from __future__ import annotations

import json

import pytest

from qssm.backends.registry import device_target
from qssm.cli import main


def test_devices_lists_every_target(capsys):
    assert main(["devices", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["targets"]
    by_name = {n: r for r in rows for n in r["names"]}
    for local in ("exact", "aer", "braket:local", "braket:local_dm"):
        assert by_name[local]["price_source"] == "free"
    for name, qubits in (("dm:fake_fez", 156), ("aer:fake_sherbrooke", 127), ("dm:iqm_garnet", 20),
                         ("braket:rigetti_ankaa3", 84), ("dm:ionq_forte", 36)):
        row = by_name[name]
        assert row["qubits"] == qubits == device_target(name).num_qubits
        assert row["snapshot"] and row["native_gates"] and row["price_source"] in ("IBM list price", "snapshot")
    assert "cz" in by_name["ibm:fake_fez"]["native_gates"] and by_name["ibm:fake_fez"]["snapshot"].startswith("2025-02-26")
    assert by_name["braket:iqm_garnet"]["price"].count("USD") == 2  # per task + per shot


def test_devices_text_names_every_snapshot(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    for name in ("dm:fake_fez", "dm:iqm_garnet", "braket:local_dm", "exact"):
        assert name in out


@pytest.mark.parametrize("name", ["dm:foo", "aer:fake_nowhere", "ibm:fake_nowhere", "dm:fake_nowhere", "quantinuum"])
def test_unknown_device_points_at_qssm_devices(name, capsys):
    assert main(["run", "examples/demo.toml", "--backend", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "qssm devices" in err and "Traceback" not in err
