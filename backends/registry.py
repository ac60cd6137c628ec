"""Backend names, one scheme for specs and the command line:

    exact                      torch statevector (the reference)
    dm:<snapshot>              qssm's batched density-matrix engine with a device snapshot's noise
                               (dm:fake_fez, dm:iqm_garnet: IBM or Braket snapshots)
    aer | aer:<snapshot>       qiskit-aer, ideal or with a device snapshot's noise (aer:fake_fez)
    ibm:<snapshot>             qiskit-ibm-runtime local testing mode (ibm:fake_fez)
    ibm:<device>               a real IBM QPU through the runtime service (ibm:ibm_kingston)
    braket:local[_dm]          Braket LocalSimulator, state vector or density matrix with noise
    braket:<device or arn>     a Braket QPU (braket:iqm_garnet, braket:arn:aws:braket:...)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qssm.backends import devices
from qssm.backends.aer import AerBackend
from qssm.backends.base import Backend
from qssm.backends.braket import DEFAULT_DM_DEVICE, BraketBackend
from qssm.backends.devices import device_names, short_name
from qssm.backends.dm import DensityMatrixBackend
from qssm.backends.exact import ExactBackend
from qssm.backends.fake_devices import fake_backend, fake_names
from qssm.backends.ibm import IBMBackend
from qssm.errors import QssmError

FORMS = "exact, dm:fake_<device>, dm:<braket device>, aer, aer:fake_<device>, ibm:fake_<device>, ibm:<device>, braket:local, braket:local_dm, braket:<device or arn>"
LIST = "`qssm devices` lists every target"


def _unknown_snapshot(name: str, rest: str) -> QssmError:
    kind = "IBM device snapshot" if rest.startswith("fake_") else "device snapshot"
    return QssmError(f"unknown {kind} {rest!r} in backend {name!r}; {LIST}")


# -- what a scheme's `rest` names: an IBM snapshot (fake_<device>), a Braket snapshot or device ---
def _fake(rest: str) -> bool:
    return rest.startswith("fake_")


def _check_fake(name: str, rest: str) -> None:
    if rest not in fake_names():
        raise _unknown_snapshot(name, rest)


def _check_dm(name: str, rest: str) -> None:
    if _fake(rest):
        return _check_fake(name, rest)
    try:
        short_name(rest)
    except QssmError:
        raise _unknown_snapshot(name, rest) from None


def _check_aer(name: str, rest: str) -> None:
    if not _fake(rest):
        raise QssmError(f"unknown backend {name!r}: aer takes a device snapshot such as aer:fake_fez; {LIST}")
    _check_fake(name, rest)


def _fake_target(rest: str):
    return fake_backend(rest).target if _fake(rest) else None


def _braket_target(rest: str):
    try:
        return devices.device_target(short_name(rest))
    except QssmError:
        return None


def _ibm_price(rest: str) -> str:
    """The IBM QPU a snapshot mimics (fake_fez -> ibm:ibm_fez)."""
    return "ibm:ibm_" + rest.removeprefix("fake_")


def _ibm_twin(rest: str) -> str | None:
    fake = rest if _fake(rest) else "fake_" + rest.removeprefix("ibm_")
    return f"dm:{fake}" if fake in fake_names() else None


def _braket_twin(rest: str) -> str | None:
    try:
        return f"dm:{short_name(rest)}"
    except QssmError:
        return None


def _braket_local_price(rest: str) -> str | None:
    """braket:local_dm[:device] runs a Braket device's noise (IQM Garnet unless named); braket:local none."""
    kind, _, device = rest.partition(":")
    return f"braket:{device or DEFAULT_DM_DEVICE}" if kind == "local_dm" else None


def _ibm_pricing(rest: str, seed: int | None) -> Backend:
    """IBM QPUs are priced on qiskit-ibm-runtime's snapshot of the device (its target, the list
    price), because opening the runtime service needs an account."""
    snapshot = "fake_" + rest.removeprefix("ibm_")
    try:
        device = fake_backend(snapshot)
    except QssmError:
        raise QssmError(f"qiskit-ibm-runtime ships no snapshot of {rest} to price it without credentials; price it "
                        "with credentials (qssm submit shows the price before it spends) or a snapshot device "
                        "such as ibm:ibm_kingston, ibm:ibm_fez") from None

    class Snapshots:  # the one call IBMBackend makes on a service it is given
        def backend(self, _name):
            return device

    return IBMBackend(rest, seed=seed, service=Snapshots())


@dataclass(frozen=True)
class Scheme:
    """One family of backend names (`kind:rest`) and everything known from the name alone, so that
    asking needs no credentials and builds no backend. Each column is a function of `rest`."""

    rest: bool | None  # True: required, False: none, None: optional
    make: Callable[[str, str, int | None], Backend]  # (name, rest, seed) -> backend
    # free and local (the backend's own `Capabilities.simulator` says the same once it is built)
    simulator: Callable[[str], bool]
    # the QPU whose price applies: the QPU itself, or the device whose snapshot noise a simulator runs;
    # None for noiseless simulators
    paid: Callable[[str], str | None]
    # the simulator that runs the name's device noise here (`qssm report --sweep`); None: no snapshot ships
    twin: Callable[[str], str | None]
    # the Qiskit Target of the device snapshot, without building the backend; None for logical simulators and QPUs
    target: Callable[[str], object | None] = lambda rest: None
    check: Callable[[str, str], None] = lambda name, rest: None  # (name, rest): raise if rest names no snapshot
    # (rest, seed) -> a backend that prices a QPU's jobs without credentials; None: the backend itself
    priced: Callable[[str, int | None], Backend] | None = None


# The one table of backends: a new backend is one row here.
SCHEMES: dict[str, Scheme] = {
    "exact": Scheme(False, lambda name, rest, seed: ExactBackend(seed=seed), simulator=lambda rest: True,
                    paid=lambda rest: None, twin=lambda rest: "exact"),
    "dm": Scheme(True, lambda name, rest, seed: DensityMatrixBackend(rest, seed=seed), simulator=lambda rest: True,
                 paid=lambda rest: _ibm_price(rest) if _fake(rest) else f"braket:{rest}", twin=lambda rest: f"dm:{rest}",
                 target=lambda rest: _fake_target(rest) if _fake(rest) else _braket_target(rest), check=_check_dm),
    "aer": Scheme(None, lambda name, rest, seed: AerBackend(rest or None, seed=seed), simulator=lambda rest: True,
                  paid=lambda rest: _ibm_price(rest) if _fake(rest) else None,
                  twin=lambda rest: _ibm_twin(rest) if rest else "exact", target=_fake_target, check=_check_aer),
    "ibm": Scheme(True, lambda name, rest, seed: IBMBackend(rest, seed=seed), simulator=_fake,
                  paid=lambda rest: _ibm_price(rest) if _fake(rest) else f"ibm:{rest}", twin=_ibm_twin, target=_fake_target,
                  check=lambda name, rest: _check_fake(name, rest) if _fake(rest) else None,
                  priced=_ibm_pricing),
    "braket": Scheme(True, lambda name, rest, seed: BraketBackend(name, seed=seed),
                     simulator=lambda rest: rest.startswith("local"),
                     paid=lambda rest: _braket_local_price(rest) if rest.startswith("local") else f"braket:{rest}",
                     twin=lambda rest: "exact" if rest.startswith("local") else _braket_twin(rest),
                     target=lambda rest: None if rest.startswith("local") else _braket_target(rest)),
}


def scheme(name: str) -> tuple[Scheme, str]:
    """The name's row of SCHEMES and its `rest`, or the one-line unknown-backend error."""
    kind, _, rest = name.partition(":")
    row = SCHEMES.get(kind)
    if row is None or (row.rest is True and not rest) or (row.rest is False and rest):
        raise QssmError(f"unknown backend {name!r}; valid forms: {FORMS}; {LIST}")
    return row, rest


def get_backend(name: str, *, seed: int | None = None) -> Backend:
    row, rest = scheme(name)
    if rest:
        row.check(name, rest)
    return row.make(name, rest, seed)


def device_target(name: str):
    """The Qiskit Target of a named backend's device snapshot, without constructing the backend
    (no runtime session, no simulator); None for logical simulators, real QPUs and unknown names."""
    try:
        row, rest = scheme(name)
    except QssmError:
        return None
    return row.target(rest)


def paid_device(name: str) -> str | None:
    """The QPU whose price applies to a backend: a QPU itself, or the device whose snapshot noise a
    simulator runs (dm:fake_fez, aer:fake_fez, ibm:fake_fez -> ibm:ibm_fez; dm:iqm_garnet,
    braket:local_dm -> braket:iqm_garnet). None for noiseless simulators."""
    row, rest = scheme(name)
    return row.paid(rest)


def pricing_backend(name: str, *, seed: int | None = None) -> Backend:
    """A backend that prices `name`'s jobs without credentials (the row's `priced`, else the backend
    itself: Braket QPUs need none until they submit). Never submits anything."""
    row, rest = scheme(name)
    if row.priced is None or row.simulator(rest):
        return get_backend(name, seed=seed)
    return row.priced(rest, seed)


def device_coordinates(name: str) -> list[tuple[int, int]] | None:
    """The device's real qubit coordinates (row, column) for drawing its lattice, where IBM
    publishes them (qiskit-ibm-runtime's embeddings: heavy-hex Falcon, Eagle, Heron), else None."""
    device = name.partition(":")[2]
    if not device.startswith("fake_"):
        return None
    from qiskit_ibm_runtime.visualization.embeddings import Embedding


    try:
        return [tuple(c) for c in Embedding.from_backend(fake_backend(device)).coordinates]
    except ValueError:  # a size whose coordinates IBM does not publish
        return None


def noise_twin(name: str) -> str:
    """The simulator that runs `name`'s device noise here: dm:<snapshot> for a device (IBM
    ibm:ibm_kingston -> dm:fake_kingston where a snapshot ships), exact for noiseless simulators.
    What `qssm report --sweep` runs instead of the job's own backend (which may be a paid QPU)."""
    row, rest = scheme(name)
    twin = row.twin(rest)
    if twin is None:
        raise QssmError(f"no device snapshot ships for {name}, so its noise cannot be simulated here; known "
                        f"snapshots: {', '.join(fake_names() + device_names())} (see `qssm devices`)")
    return twin


def is_simulator(name: str) -> bool:
    """Backends that cost nothing and run here: everything but real QPUs (SCHEMES, from the name
    alone). Unknown names get the unknown-backend error."""
    row, rest = scheme(name)
    return row.simulator(rest)
