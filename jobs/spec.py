"""Job spec files (TOML): what to run, where, with how many shots, and within which budget.

    [model]
    checkpoint = "checkpoints/qmamba-haystack.safetensors"

    [data]                 # the checkpoint's own task, test split
    n = 64                 # first n test examples
    seed = 10007           # generated tasks only
    T = 16                 # generated tasks only: sequence length (default: trained length)

    [backend]
    name = "aer:fake_fez"  # exact | aer | aer:<fake> | ibm:<fake or device> | braket:local | ...
    shots = 4000           # 0: exact expectation values (ideal simulators only)
    optimization_level = 2
    seed_transpiler = 7
    seed_simulator = 1
    cluster = "local:2"    # simulators only: batches on a Dask cluster (or "tcp://host:8786")

    [split]
    cutting = "auto"       # off | auto | force
    max_overhead = 1000.0  # sampling-overhead budget for gate cuts
    segment = 0            # QLAM tokens per segment; 0 = whole sequence in one circuit
    tomography = "pauli"   # how segment states are estimated: Pauli-basis tomography (3^n bases)

    [mitigation]
    readout = false
    zne = false

    [budget]
    max_cost_usd = 0.0     # 0: no limit
    max_qpu_seconds = 0.0

Every mistake is a one-line QssmError naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qssm.errors import QssmError


@dataclass(frozen=True)
class DataSpec:
    n: int = 64
    seed: int = 10_007
    T: int = 0  # 0: the trained length


@dataclass(frozen=True)
class BackendSpec:
    name: str = "exact"
    shots: int = 0
    optimization_level: int = 2
    seed_transpiler: int = 7
    seed_simulator: int = 1
    layout: str = "default"  # default | noise_aware (pipeline.layout: lowest-error connected qubits)
    cluster: str = ""  # run simulator batches on Dask: "local:N" workers or a scheduler address "tcp://host:8786"


@dataclass(frozen=True)
class SplitSpec:
    cutting: str = "auto"
    max_overhead: float = 1000.0
    segment: int = 0
    tomography: str = "pauli"


@dataclass(frozen=True)
class MitigationSpec:
    readout: bool = False
    zne: bool = False
    zne_scales: str = "1,3,5"  # odd two-qubit gate folding factors
    extrapolation: str = "richardson"  # richardson | linear
    readout_shots: int = 0  # shots per calibration circuit; 0 = [backend] shots
    # IBM runtime pass-throughs (ibm:* backends only)
    resilience_level: int = -1  # -1 = unset
    twirling: bool = False
    dynamical_decoupling: bool = False


@dataclass(frozen=True)
class BudgetSpec:
    max_cost_usd: float = 0.0
    max_qpu_seconds: float = 0.0


@dataclass(frozen=True)
class JobSpec:
    checkpoint: str
    data: DataSpec = field(default_factory=DataSpec)
    backend: BackendSpec = field(default_factory=BackendSpec)
    split: SplitSpec = field(default_factory=SplitSpec)
    mitigation: MitigationSpec = field(default_factory=MitigationSpec)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    source: str = ""  # the file it came from, for messages

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


SECTIONS = {"data": DataSpec, "backend": BackendSpec, "split": SplitSpec,
            "mitigation": MitigationSpec, "budget": BudgetSpec}
# classical shadows are not implemented yet: the spec refuses them rather than ignoring them
CHOICES = {("split", "cutting"): ("off", "auto", "force"), ("split", "tomography"): ("pauli",)}


def _section(where: str, name: str, cls, raw: Any):
    if not isinstance(raw, dict):
        raise QssmError(f"{where}: [{name}] must be a table, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise QssmError(f"{where}: unknown key {name}.{key}; valid keys: {', '.join(fields)}")
    values = {}
    for key, value in raw.items():
        want = type(fields[key].default)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not want:
            raise QssmError(f"{where}: {name}.{key} must be {want.__name__}, got {value!r}")
        if want in (int, float) and value < 0 and fields[key].default >= 0:  # negative defaults mean "unset"
            raise QssmError(f"{where}: {name}.{key} must be >= 0, got {value}")
        if (name, key) in CHOICES and value not in CHOICES[name, key]:
            raise QssmError(f"{where}: {name}.{key} must be one of {', '.join(CHOICES[name, key])}, got {value!r}")
        values[key] = value
    spec = cls(**values)
    if name == "backend" and spec.optimization_level not in (0, 1, 2, 3):
        raise QssmError(f"{where}: backend.optimization_level must be 0..3, got {spec.optimization_level}")
    if name == "data" and spec.n < 1:
        raise QssmError(f"{where}: data.n must be >= 1, got {spec.n}")
    return spec


def parse_spec(raw: dict[str, Any], where: str = "spec", base: Path | None = None) -> JobSpec:
    unknown = set(raw) - set(SECTIONS) - {"model"}
    if unknown:
        raise QssmError(f"{where}: unknown section(s) {sorted(unknown)}; valid: model, {', '.join(SECTIONS)}")
    model = raw.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("checkpoint"), str):
        raise QssmError(f'{where}: missing [model] checkpoint = "path/to/model.safetensors"')
    if set(model) - {"checkpoint"}:
        raise QssmError(f"{where}: unknown key(s) in [model]: {sorted(set(model) - {'checkpoint'})}")
    ckpt = Path(model["checkpoint"])
    if not ckpt.is_absolute() and base is not None and not ckpt.exists() and (base / ckpt).exists():
        ckpt = base / ckpt
    if not ckpt.is_file():
        raise QssmError(f"{where}: checkpoint {model['checkpoint']} does not exist; fix [model] checkpoint")
    parts = {name: _section(where, name, cls, raw.get(name, {})) for name, cls in SECTIONS.items()}
    return JobSpec(checkpoint=str(ckpt), source=where, **parts)


def load_spec(path: str | Path) -> JobSpec:
    path = Path(path)
    if not path.is_file():
        raise QssmError(f"spec file {path} does not exist; see examples/ for job specs")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise QssmError(f"{path}: not valid TOML ({e})") from None
    return parse_spec(raw, str(path), base=path.parent.parent)
