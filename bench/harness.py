"""What the bench scripts share (bench/__init__.py): the repository's paths, one job run through
the pipeline as `qssm run` runs it, timing, the results table, and the two reference
implementations the speed suite's exact-inference row compares against (PennyLane, and a
hand-fused torch floor).

Timings are medians over repeats after one warm-up; machines are noisy, so only ratios measured
side by side in one run are quoted. Every measurement runs with torch.set_num_threads(1).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import qiskit
import torch

from qssm.app.inference import run
from qssm.app.job import Job, prepare
from qssm.jobs.spec import JobSpec, parse_spec
from qssm.models.evaluator import ExactEvaluator, QuantumCall, z_labels
from qssm.models.statevector import compile_ops, default_device, phi, rotation_matrix, z_expectations
from qssm.pipeline.build import build_pipeline
from qssm.pipeline.stages import Event, Pipeline

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "checkpoints" / "qmamba-haystack.safetensors"


# ---- one job through the pipeline -------------------------------------------------------------


def checkpoint_path(name: str | Path) -> Path:
    """A shipped checkpoint by name (checkpoints/NAME.safetensors); a path is kept as given."""
    return Path(name) if str(name).endswith(".safetensors") else ROOT / "checkpoints" / f"{name}.safetensors"


def job_spec(checkpoint: str | Path, backend: str, n: int, shots: int | str = 0, *, data: dict | None = None,
             split: dict | None = None, mitigation: dict | None = None, **backend_fields) -> JobSpec:
    """The spec a job file would give: [data] n (plus `data`: seed, T), [backend] name and shots
    (plus `backend_fields`: seed_simulator, seed_transpiler, cluster, layout, ...), [split], [mitigation]."""
    return parse_spec({"model": {"checkpoint": str(checkpoint_path(checkpoint))}, "data": {"n": n, **(data or {})},
                       "backend": {"name": backend, "shots": shots, **backend_fields},
                       "split": split or {}, "mitigation": mitigation or {}})


@dataclass
class Run:
    report: dict  # the report `qssm run` prints: accuracy (and its standard error), agreement, logit errors, ...
    seconds: float  # wall clock of the whole run, checkpoint read included
    pipeline: Pipeline  # after the run: its tracker, layout report, mitigation settings
    job: Job  # the prepared job (closed): its resolved spec, float64 model and test examples


def run_job(spec: JobSpec, observers: Sequence[Callable[[Event], None]] = (), inspect=None,
            progress: bool = False) -> Run:
    """One job as `qssm run` runs it: prepared once (checkpoint read, checks, split resolved), its
    test examples through the pipeline with `observers` watching every stage, scored against the
    exact forward. `inspect(evaluator)` sees the evaluator before it runs. The backend is closed."""
    start = time.perf_counter()
    with prepare(spec) as job:
        pipeline = build_pipeline(job.spec, job.backend, model=job.model)
        for fn in observers:
            pipeline.observe(fn)
        report = run(job, pipeline=pipeline, progress=progress, inspect=inspect).report
    return Run(report, time.perf_counter() - start, pipeline, job)


# ---- timing ---------------------------------------------------------------------------------


def times(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `repeats` calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def fmt_seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


# ---- the results table ----------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table. `ratio` is comparison / qssm (a speedup) unless `ratio_def` says
    otherwise; `goal` is the threshold the ratio is checked against (None: informational)."""

    key: str  # "a1", "b", ...
    what: str
    qssm: float  # seconds (or a count when unit == "trips")
    other: float
    unit: str  # "s" | "s/binding" | "trips"
    ratio: float
    ratio_def: str  # e.g. "naive/qssm"
    goal: str = ""  # e.g. ">= 100"; "" = no goal
    met: bool | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    def cells(self) -> list[str]:
        show = (lambda v: f"{v:g}") if self.unit == "trips" else fmt_seconds
        suffix = "" if self.unit in ("s", "trips") else f" /{self.unit.split('/')[-1]}"
        met = "" if self.met is None else ("met" if self.met else "NOT met")
        return [self.key, self.what, show(self.qssm) + suffix, show(self.other) + suffix,
                f"{self.ratio:.3g}x {self.ratio_def}", f"{self.goal} {met}".strip()]


def check(ratio: float, goal: str) -> bool | None:
    if not goal:
        return None
    op, value = goal.split()
    return {">=": ratio >= float(value), "<=": ratio <= float(value), "==": math.isclose(ratio, float(value))}[op]


def render(rows: list[Row], env: dict) -> str:
    head = ["row", "measurement", "qssm", "comparison", "ratio", "goal"]
    body = [r.cells() for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [f"qssm bench  {env['date']}  {env['cpu']}  torch {env['torch']} on {env.get('device', 'cpu')}, "
           f"{env['threads']} thread(s) (torch.set_num_threads(1) for every measurement)  mode: {env['mode']}  "
           f"load average at start {env.get('load_average')}",
           line(head), line(["-" * w for w in widths])]
    out += [line(c) for c in body]
    notes = [f"  {r.key}: {r.note}" for r in rows if r.note]
    if notes:
        out += ["notes:"] + notes
    return "\n".join(out)


def environment(mode: str) -> dict:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        cpu = ""
    return {"date": _dt.datetime.now().isoformat(timespec="seconds"), "cpu": cpu or platform.processor(),
            "python": platform.python_version(), "torch": torch.__version__, "qiskit": qiskit.__version__,
            "threads": torch.get_num_threads(), "mode": mode, "device": str(default_device()),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def as_json(rows: list[Row], env: dict, settings: dict) -> dict:
    return {"environment": env, "settings": settings, "rows": [asdict(r) for r in rows]}


# ---- capturing a model's quantum calls ------------------------------------------------------


class RecordingEvaluator:
    """Answers exactly (torch statevector) and keeps every call, to replay circuits in isolation."""

    def __init__(self) -> None:
        self.inner = ExactEvaluator()
        self.calls: list[QuantumCall] = []

    def evaluate(self, calls):
        self.calls += list(calls)
        return self.inner.evaluate(calls)


@torch.no_grad()
def record_calls(model, tokens: torch.Tensor) -> list[QuantumCall]:
    rec = RecordingEvaluator()
    model(tokens, rec)
    return rec.calls


# ---- PennyLane: the same circuits as TorchLayers --------------------------------------------


class PennyLaneEvaluator:
    """The model's sub-circuits as `qml.qnn.TorchLayer`s on default.qubit, built from the same gate
    lists (layer.ops[s]) and trained weights (phi(w) = pi tanh(w) inside the QNode). Plugged into the
    unchanged model through the Evaluator interface."""

    def __init__(self, model, device: str = "default.qubit"):
        import pennylane as qml

        self.layers = {}
        for layer in model.layers:
            for s in model.cfg.SUBCIRCUITS:
                w = layer.qweights[s].detach().clone()
                qnode = self._qnode(qml, layer.ops[s], model.cfg.n_qubits, device)
                tl = qml.qnn.TorchLayer(qnode, {"weights": tuple(w.shape)})
                with torch.no_grad():  # the trained weights; TorchLayer casts them to the input dtype
                    tl.qnode_weights["weights"].copy_(w)
                self.layers[layer.name(s)] = tl
        self.round_trips = 0

    @staticmethod
    def _qnode(qml, ops, n: int, device: str):
        gates = {"rx": qml.RX, "ry": qml.RY, "rz": qml.RZ, "cz": qml.CZ, "cx": qml.CNOT}

        @qml.qnode(qml.device(device, wires=n), interface="torch")
        def circuit(inputs, weights):
            angles = math.pi * torch.tanh(weights)
            for op in ops:
                if op.src == "in":
                    gates[op.gate](inputs[..., op.index], wires=op.qubits[0])
                elif op.src == "w":
                    gates[op.gate](angles[op.index], wires=op.qubits[0])
                else:  # cx: control qubits[0], target qubits[1], as in the torch simulator
                    gates[op.gate](wires=list(op.qubits))
            return [qml.expval(qml.PauliZ(q)) for q in range(n)]

        return circuit

    def evaluate(self, calls: Sequence[QuantumCall]) -> list[torch.Tensor]:
        self.round_trips += 1
        out = []
        for call in calls:
            assert call.observables == z_labels(call.n_qubits), "PennyLane bench layer measures <Z_q> only"
            flat = call.inputs.reshape(-1, call.inputs.shape[-1])
            vals = self.layers[call.name](flat).to(call.inputs.dtype)
            out.append(vals.reshape(*call.inputs.shape[:-1], vals.shape[-1]))
        return out


# ---- the raw batched statevector floor ------------------------------------------------------


@dataclass
class FusedCircuits:
    """All sub-circuits of a forward pass as one stacked problem, for the arithmetic floor.

    Precondition (checked): every sub-circuit is one encoding layer (one input rotation per qubit,
    from |0..0>) followed by input-independent gates, which `compile_ops` fuses into one unitary U
    (QMamba with reupload = 1). The floor is then, per row: the encoded product state as a Kronecker
    product of n single-qubit states, one 2^n x 2^n complex matmul, |amp|^2 times the Z-sign table.
    U is precomputed once (weights are fixed at inference), so the floor excludes the weight fusion
    that qssm's evaluator redoes on every call.
    """

    unitaries: torch.Tensor  # (K, 2^n, 2^n)
    gates: list[str]  # encoding gate of qubit q (same for every sub-circuit)
    columns: torch.Tensor  # (K, n): input index feeding qubit q
    inputs: torch.Tensor  # (K, R, n_in) stacked angles
    n: int

    @classmethod
    def from_calls(cls, calls: Sequence[QuantumCall]) -> "FusedCircuits":
        n = calls[0].n_qubits
        us, cols, gates = [], [], None
        for c in calls:
            prog = compile_ops(list(c.ops), n, phi(c.weights.detach()))
            enc, rest = prog.steps[:n], prog.steps[n:]
            ok = (all(s[0] == "in" for s in enc) and sorted(s[2] for s in enc) == list(range(n))
                  and len(rest) == 1 and rest[0][0] == "U" and c.observables == z_labels(n))
            if not ok:
                raise ValueError(f"{c.name}: the fused floor needs one encoding layer then one fused block")
            by_qubit = sorted(enc, key=lambda s: s[2])
            g = [s[1] for s in by_qubit]
            if gates not in (None, g):
                raise ValueError("the fused floor needs the same encoding gates in every sub-circuit")
            gates = g
            us.append(rest[0][1])
            cols.append([s[3] for s in by_qubit])
        inputs = torch.stack([c.inputs.detach().reshape(-1, c.inputs.shape[-1]) for c in calls])
        return cls(torch.stack(us), gates, torch.tensor(cols), inputs, n)

    def run(self) -> torch.Tensor:
        """(K, R, n) values <Z_q> for every sub-circuit and row, in one fused pass."""
        k = self.inputs.shape[0]
        theta = torch.gather(self.inputs, 2, self.columns[:, None, :].expand(-1, self.inputs.shape[1], -1))
        state = None
        for q in range(self.n):  # R(theta)|0> is the first column of the rotation matrix
            amp = rotation_matrix(self.gates[q], theta[..., q])[..., :, 0]  # (K, R, 2)
            # qubit q is bit q of the index: it becomes the more significant factor of the kron
            state = amp if state is None else (amp[..., :, None] * state[..., None, :]).reshape(k, -1, 2 ** (q + 1))
        return z_expectations(torch.bmm(state, self.unitaries.transpose(1, 2)), self.n)


def qssm_circuits(calls: Sequence[QuantumCall]) -> torch.Tensor:
    """qssm's circuit evaluation for the same calls (the ExactEvaluator: compile_ops, run_program,
    z_expectations per call), stacked like FusedCircuits.run()."""
    vals = ExactEvaluator().evaluate(calls)
    return torch.stack([v.reshape(-1, v.shape[-1]) for v in vals])
