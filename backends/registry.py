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

from dataclasses import dataclass
from typing import Callable

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


def _unknown_snapshot(name: str) -> QssmError:
    rest = name.partition(":")[2]
    kind = "IBM device snapshot" if rest.startswith("fake_") else "device snapshot"
    return QssmError(f"unknown {kind} {rest!r} in backend {name!r}; {LIST}")


def _check_snapshot(name: str) -> None:
    """dm:/aer:/ibm:fake_ names must name a shipped snapshot (one line pointing at `qssm devices`)."""
    kind, _, rest = name.partition(":")
    if rest.startswith("fake_"):
        if rest not in fake_names():
            raise _unknown_snapshot(name)
    elif kind == "dm":
        try:
            short_name(rest)
        except QssmError:
            raise _unknown_snapshot(name) from None
    elif kind == "aer" and rest:
        raise QssmError(f"unknown backend {name!r}: aer takes a device snapshot such as aer:fake_fez; {LIST}")


@dataclass(frozen=True)
class Scheme:
    """One family of backend names: whether a name takes a `:rest`, how it is built, whether it
    runs here for free (known from the name alone, so asking needs no credentials: the backend's
    own `Capabilities.simulator` says the same once it is built), and any check of `rest`."""

    rest: bool | None  # True: required, False: none, None: optional
    make: Callable[[str, str, int | None], Backend]  # (name, rest, seed) -> backend
    simulator: Callable[[str], bool]  # rest -> free and local
    check: Callable[[str], None] = lambda name: None


# The one table of backends: a new backend is one row here.
SCHEMES: dict[str, Scheme] = {
    "exact": Scheme(False, lambda name, rest, seed: ExactBackend(seed=seed), lambda rest: True),
    "dm": Scheme(True, lambda name, rest, seed: DensityMatrixBackend(rest, seed=seed), lambda rest: True,
                 lambda name: _check_snapshot(name)),
    "aer": Scheme(None, lambda name, rest, seed: AerBackend(rest or None, seed=seed), lambda rest: True,
                  lambda name: _check_snapshot(name)),
    "ibm": Scheme(True, lambda name, rest, seed: IBMBackend(rest, seed=seed), lambda rest: rest.startswith("fake_"),
                  lambda name: _check_snapshot(name)),
    "braket": Scheme(True, lambda name, rest, seed: BraketBackend(name, seed=seed),
                     lambda rest: rest.startswith("local")),
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
        row.check(name)
    return row.make(name, rest, seed)


def device_target(name: str):
    """The Qiskit Target of a named backend's device snapshot, without constructing the backend
    (no runtime session, no simulator); None for logical simulators and real QPUs."""
    kind, _, rest = name.partition(":")
    if rest.startswith("fake_") and kind in ("aer", "ibm", "dm"):
        return fake_backend(rest).target
    if kind in ("dm", "braket") and rest and not rest.startswith("local"):
        try:
            return devices.device_target(devices.short_name(rest))
        except QssmError:
            return None
    return None


def paid_device(name: str) -> str | None:
    """The QPU whose price applies to a backend: a QPU itself, or the device whose snapshot noise a
    simulator runs (dm:fake_fez, aer:fake_fez, ibm:fake_fez -> ibm:ibm_fez; dm:iqm_garnet,
    braket:local_dm -> braket:iqm_garnet). None for noiseless simulators."""
    kind, _, rest = name.partition(":")
    if not is_simulator(name):
        return name
    if kind in ("dm", "aer", "ibm") and rest.startswith("fake_"):
        return "ibm:ibm_" + rest.removeprefix("fake_")
    if kind == "dm" and rest:
        return f"braket:{rest}"
    if kind == "braket" and rest.split(":")[0] == "local_dm":
        return f"braket:{rest.partition(':')[2] or DEFAULT_DM_DEVICE}"
    return None


def pricing_backend(name: str, *, seed: int | None = None) -> Backend:
    """A backend that prices `name`'s jobs without credentials: Braket QPUs need none until they
    submit; IBM QPUs are priced on qiskit-ibm-runtime's snapshot of the device (its target, the
    list price), because opening the runtime service needs an account. Never submits anything."""
    kind, _, rest = name.partition(":")
    if kind != "ibm" or is_simulator(name):
        return get_backend(name, seed=seed)

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
    kind, _, rest = name.partition(":")
    if kind == "dm":
        return name
    if kind in ("aer", "ibm") and rest:
        fake = rest if rest.startswith("fake_") else "fake_" + rest.removeprefix("ibm_")
        if fake in fake_names():
            return f"dm:{fake}"
    if kind == "braket" and rest and not rest.startswith("local"):
        try:
            return f"dm:{short_name(rest)}"
        except QssmError:
            pass
    if kind == "exact" or (kind == "aer" and not rest) or name.startswith("braket:local"):
        return "exact"
    raise QssmError(f"no device snapshot ships for {name}, so its noise cannot be simulated here; known "
                    f"snapshots: {', '.join(fake_names() + device_names())} (see `qssm devices`)")


def is_simulator(name: str) -> bool:
    """Backends that cost nothing and run here: everything but real QPUs (SCHEMES, from the name
    alone). Unknown names get the unknown-backend error."""
    row, rest = scheme(name)
    return row.simulator(rest)
