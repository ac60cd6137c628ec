"""dm: qssm's batched noisy density-matrix engine (backends/dmsim.py) with a device's noise, the
default backend for noisy dry runs.

    dm:fake_fez, dm:fake_sherbrooke, ...   an IBM device snapshot: the same noise Aer's device
                                           models build (depolarizing + thermal relaxation per
                                           gate, readout error), restricted to the active qubits
    dm:iqm_garnet, dm:rigetti_ankaa3, ...  a Braket device snapshot: the channels braket:local_dm
                                           uses, built from the snapshot's fidelities

Circuits are the ISA circuits the device would run, compacted onto their active qubits as for
aer:. Estimate mode gives exact noisy Tr(rho O) (Aer's EstimatorV2 gives the same to 1e-6);
sample mode draws every measured circuit's outcomes from its exact noisy distribution, readout
error included, each row from its own seeded generator (a batch split into chunks samples the
same). Measured circuits that share a body (the measure stage's groups) simulate it once per row.
Compiled programs are cached by the circuits' structure, so a round trip's repeat of a template,
on this process or a Dask worker, compiles nothing.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from qssm.backends import devices, dmsim
from qssm.backends.aer import active_noise_model, active_qubits, compact
from qssm.backends.base import Capabilities, LocalBackend, batch_seed
from qssm.backends.fake_devices import calibration, fake_backend, max_shots
from qssm.backends.noise import noise_from_aer
from qssm.backends.sampling import broadcast, sample_counts
from qssm.errors import QssmError
from qssm.models.statevector import default_device, one_thread
from qssm.types import BatchResult, CircuitBatch

MAX_QUBITS = 10  # a density matrix of 10 qubits is 8 MB per row
DEVICE = default_device()  # CUDA when present


def _rows(rows) -> torch.Tensor:
    return torch.as_tensor(rows, dtype=torch.float64, device=DEVICE)


def structure(circuit) -> int:
    """A cheap content key: every instruction's name, parameters and wires."""
    index = {b: i for i, b in enumerate(circuit.qubits)} | {b: -1 - i for i, b in enumerate(circuit.clbits)}
    return hash(tuple((inst.operation.name, tuple(map(str, inst.operation.params)),
                       tuple(index[b] for b in (*inst.qubits, *inst.clbits))) for inst in circuit.data))


class DensityMatrixBackend(LocalBackend):
    prefix = "dm"

    def __init__(self, device: str, seed: int | None = None):
        super().__init__()
        self.seed = seed
        if device.startswith("fake_"):
            fake = fake_backend(device)
            self.device, self.target, self.calibration = device, fake.target, calibration(fake)
            self.max_shots = max_shots(fake) or 100_000
            self._noise_model = lambda active: active_noise_model(device, active)
        else:
            self.device = devices.short_name(device)
            self.target, self.calibration = devices.device_target(self.device), devices.calibration(self.device)
            self.max_shots = devices.max_shots(self.device)
            self._noise_model = lambda active: devices.aer_noise_model(self.device, active)
        self.name = f"dm:{self.device}"
        # True: sample mode returns expected counts (shots x exact outcome probabilities, floats)
        # instead of draws; every stage's post-processing then gives the infinite-shot values
        # the sampled pipeline converges to, and its standard errors at `shots` (pipeline/shotplan.py)
        self.expected = False
        self._programs: OrderedDict[tuple, object] = OrderedDict()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_shots=self.max_shots, max_qubits=self.target.num_qubits, chunkable=True,
                            expected_counts=True, exact_without_readout=True)

    def noise(self, active: tuple[int, ...]):
        return noise_from_aer(self._noise_model(active), len(active))

    def _cached(self, key: tuple, build):
        if key not in self._programs:
            self._programs[key] = build()
            while len(self._programs) > 64:
                self._programs.popitem(last=False)
        self._programs.move_to_end(key)
        return self._programs[key]

    def evaluate(self, batch: CircuitBatch) -> BatchResult:
        meta = {"backend": self.name, "method": "qssm density matrix"}
        circuits = list(batch.circuits)
        active = tuple(sorted(set().union(*(active_qubits(c, batch.observables) for c in circuits))))
        if len(active) > MAX_QUBITS:
            raise QssmError(f"{self.name} simulates up to {MAX_QUBITS} active qubits, batch {batch.meta.get('template')} "
                            f"uses {len(active)}: use aer:{self.device} or cut the template")
        small = [compact(c, batch.observables, active) for c in circuits]
        circuits, observables = [s[0] for s in small], small[0][1]
        key = (active, *(structure(c) for c in circuits))
        with torch.no_grad(), one_thread():
            if not batch.sampled:
                program = self._cached(key, lambda: dmsim.compile_circuit(circuits[0], self.noise(active), device=DEVICE))
                rows = _rows(batch.rows()) if circuits[0].num_parameters else None
                values = dmsim.expectation_values(program, rows, observables).cpu().numpy()
                return BatchResult(values, np.zeros_like(values), meta=meta, shots=batch.shots or 0)
            probs = self._probabilities(key, circuits, batch, active)
        if self.expected:  # the shot planner's oracle: every histogram is its expectation, shots x p
            return BatchResult(counts=tuple(broadcast(p * batch.shots, len(batch.parameters)) for p in probs), meta=meta)
        seed = batch_seed(self.seed or 0, batch.key or "0" * 8)
        first = batch.first_row  # a chunk of a larger batch (a cluster)
        counts = tuple(broadcast(sample_counts(p, batch.shots, [seed, i], first_row=first if len(p) > 1 else 0),
                                 len(batch.parameters)) for i, p in enumerate(probs))
        return BatchResult(counts=counts, meta=meta, shots=batch.shots or 0)

    def _probabilities(self, key, circuits, batch: CircuitBatch, active) -> list[np.ndarray]:
        def rows(i):
            return _rows(batch.rows(i)) if circuits[i].num_parameters else None

        cols = {None if c is None else tuple(c) for c in batch.columns} if batch.columns else {None}
        same_inputs = len(cols) == 1 and all(list(c.parameters) == list(circuits[0].parameters) for c in circuits)
        if len(circuits) > 1 and same_inputs:  # measurement groups of one body: simulate it once per row
            shared = self._cached(key, lambda: dmsim.compile_many(circuits, self.noise(active), device=DEVICE))
            return [p.cpu().numpy() for p in dmsim.outcome_probabilities_many(shared, rows(0))]
        programs = self._cached(key, lambda: [dmsim.compile_circuit(c, self.noise(active), device=DEVICE)
                                              for c in circuits])
        return [dmsim.outcome_probabilities(p, rows(i)).cpu().numpy() for i, p in enumerate(programs)]
