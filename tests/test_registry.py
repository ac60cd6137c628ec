"""backends/registry.py: one table of backend schemes; every helper that answers from a name
(price, noise twin, device target, snapshot check, simulator or QPU) is a lookup in its row."""

from __future__ import annotations

import pytest

from qssm.backends import registry
from qssm.backends.exact import ExactBackend
from qssm.backends.fake_devices import fake_backend
from qssm.backends.registry import (
    SCHEMES,
    Scheme,
    device_target,
    get_backend,
    is_simulator,
    noise_twin,
    paid_device,
    pricing_backend,
)
from qssm.errors import QssmError

# name -> (paid device, noise twin, target qubits or None, simulator): the answers before the table carried them
KNOWN = {
    "exact": (None, "exact", None, True),
    "dm:fake_fez": ("ibm:ibm_fez", "dm:fake_fez", 156, True),
    "dm:iqm_garnet": ("braket:iqm_garnet", "dm:iqm_garnet", 20, True),
    "dm:ionq_forte": ("braket:ionq_forte", "dm:ionq_forte", 36, True),
    "aer": (None, "exact", None, True),
    "aer:fake_fez": ("ibm:ibm_fez", "dm:fake_fez", 156, True),
    "ibm:fake_fez": ("ibm:ibm_fez", "dm:fake_fez", 156, True),
    "ibm:ibm_kingston": ("ibm:ibm_kingston", "dm:fake_kingston", None, False),
    "braket:local": (None, "exact", None, True),
    "braket:local_dm": ("braket:iqm_garnet", "exact", None, True),
    "braket:local_dm:ionq_forte": ("braket:ionq_forte", "exact", None, True),
    "braket:iqm_garnet": ("braket:iqm_garnet", "dm:iqm_garnet", 20, False),
    "braket:rigetti_ankaa3": ("braket:rigetti_ankaa3", "dm:rigetti_ankaa3", 84, False),
    "braket:arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet": (
        "braket:arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet", "dm:iqm_garnet", 20, False),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_the_helpers_answer_from_the_table(name):
    paid, twin, qubits, simulator = KNOWN[name]
    target = device_target(name)
    assert (paid_device(name), noise_twin(name), target and target.num_qubits, is_simulator(name)) == \
        (paid, twin, qubits, simulator)


@pytest.mark.parametrize("name, needle", [("dm:fake_foo", "unknown IBM device snapshot"), ("dm:foo", "unknown device snapshot"),
                                          ("aer:foo", "aer takes a device snapshot"), ("ibm:fake_foo", "unknown IBM device snapshot"),
                                          ("exact:x", "unknown backend"), ("foo", "unknown backend")])
def test_unknown_names_are_one_clear_error(name, needle):
    with pytest.raises(QssmError, match=needle):
        get_backend(name)


def test_a_new_backend_is_one_row(monkeypatch):
    """A scheme added to SCHEMES alone answers every helper: its names parse, build, check, price,
    pick their noise twin and target, with no other edit to the registry."""
    checked = []

    def check(name, rest):
        checked.append(rest)
        if rest != "fez":
            raise QssmError(f"no toy snapshot {rest!r}")

    monkeypatch.setitem(SCHEMES, "toy", Scheme(
        True, lambda name, rest, seed: ExactBackend(seed=seed), simulator=lambda rest: rest == "fez",
        paid=lambda rest: f"toyqpu:{rest}", twin=lambda rest: f"dm:fake_{rest}",
        target=lambda rest: fake_backend(f"fake_{rest}").target, check=check,
        priced=lambda rest, seed: ExactBackend(seed=seed)))
    assert isinstance(get_backend("toy:fez", seed=3), ExactBackend) and checked == ["fez"]
    with pytest.raises(QssmError, match="no toy snapshot"):
        get_backend("toy:kyiv")
    assert paid_device("toy:fez") == "toyqpu:fez" and noise_twin("toy:fez") == "dm:fake_fez"
    assert device_target("toy:fez").num_qubits == 156
    assert is_simulator("toy:fez") and not is_simulator("toy:qpu")
    assert isinstance(pricing_backend("toy:qpu"), ExactBackend)
    with pytest.raises(QssmError, match="unknown backend 'toy'"):
        registry.scheme("toy")  # the row's rest = True: a toy name needs its device
