"""aer: qiskit-aer, ideal or with a device snapshot's noise model.

Exact values (shots = 0) come from Aer's EstimatorV2 (no shot noise; with a noise model this is the
exact noisy expectation, computed on the density matrix). With shots, each qubit-wise-commuting
measurement group is sampled by Aer's SamplerV2, every binding of a batch in one call.

ISA circuits for a 156-qubit device touch a handful of qubits; Aer truncates idle qubits, so the
simulated width is the active width. For noisy circuits on a few active qubits the density matrix
beats per-shot trajectories (one evolution per binding instead of one per shot); bench/ measures it.
"""

from __future__ import annotations

import uuid

import numpy as np

from qssm.backends.base import Backend, Handle
from qssm.backends.fake_devices import calibration, fake_backend, max_shots
from qssm.backends.sampling import bitarray_outcomes, expectations, measurement_groups, with_measurement
from qssm.pipeline.types import BatchResult, CompiledBatch

DENSITY_MATRIX_MAX_QUBITS = 10


def active_qubits(circuit) -> int:
    used = {circuit.find_bit(q).index for inst in circuit.data for q in inst.qubits
            if inst.operation.name != "barrier"}
    return len(used)


class AerBackend(Backend):
    deterministic = False

    def __init__(self, device: str | None = None, seed: int | None = None, noise: bool = True):
        self.device = device
        self.seed = seed
        self.name = f"aer:{device}" if device else "aer"
        self.noise_model = None
        self.max_shots = 1_000_000
        if device:
            from qiskit_aer.noise import NoiseModel

            fake = fake_backend(device)
            self.target = fake.target
            self.calibration = calibration(fake)
            self.max_shots = max_shots(fake) or 100_000
            self.noise_model = NoiseModel.from_backend(fake) if noise else None
        self.deterministic = self.noise_model is None
        self._jobs: dict[str, BatchResult] = {}

    def _options(self, circuit) -> dict:
        width = active_qubits(circuit)
        noisy = self.noise_model is not None
        method = "density_matrix" if noisy and width <= DENSITY_MATRIX_MAX_QUBITS else "statevector"
        opts = {"method": method}
        if noisy:
            opts["noise_model"] = self.noise_model
        if self.seed is not None:
            opts["seed_simulator"] = self.seed
        return opts

    def evaluate(self, batch: CompiledBatch) -> BatchResult:
        from qiskit_aer.primitives import EstimatorV2, SamplerV2

        opts = self._options(batch.circuit)
        rows = batch.parameters if batch.circuit.num_parameters else None
        if not batch.shots:
            est = EstimatorV2(options={"backend_options": opts})
            obs = [list(batch.observables)]  # shape (1, n_obs), broadcast against (rows, 1)
            params = rows[:, None, :] if rows is not None else None
            res = est.run([(batch.circuit, obs, params)]).result()[0]
            values = np.asarray(res.data.evs).reshape(len(batch.parameters), -1)
            return BatchResult(values, np.zeros_like(values), self._meta(batch, opts))
        groups = measurement_groups(batch.observables)
        sampler = SamplerV2(options={"backend_options": opts, "run_options": {}}, seed=self.seed)
        pubs = [(with_measurement(batch.circuit, g), rows, batch.shots) for g in groups]
        res = sampler.run(pubs).result() if pubs else []
        outcomes = [bitarray_outcomes(r.data.meas) for r in res]
        values, stderr = expectations(outcomes, batch.observables, groups, batch.shots)
        return BatchResult(values, stderr, self._meta(batch, opts, len(groups)))

    def _meta(self, batch, opts, groups=0) -> dict:
        return {"backend": self.name, "shots": batch.shots or 0, "method": opts["method"],
                "measurement_groups": groups, "job_ids": []}

    def submit(self, batch: CompiledBatch) -> Handle:
        job = f"aer-{uuid.uuid4().hex[:12]}"
        self._jobs[job] = self.evaluate(batch)
        return Handle(self.name, [job])

    def status(self, handle: Handle) -> str:
        return "done" if handle.job_ids[0] in self._jobs else "failed"

    def result(self, handle: Handle) -> BatchResult:
        return self._jobs.pop(handle.job_ids[0])

    def cancel(self, handle: Handle) -> None:
        self._jobs.pop(handle.job_ids[0], None)

    def sampler(self):
        from qiskit_aer.primitives import SamplerV2

        opts = {"noise_model": self.noise_model} if self.noise_model is not None else {}
        if self.seed is not None:
            opts["seed_simulator"] = self.seed
        return SamplerV2(options={"backend_options": opts})
