"""Job spec files (TOML): what to run, where, with how many shots, and within which budget.

    [model]
    checkpoint = "checkpoints/qmamba-haystack.safetensors"

    [data]                 # the checkpoint's own task, test split
    n = 64                 # first n test examples
    seed = 10007           # generated tasks only
    T = 16                 # generated tasks only: sequence length (default: trained length)

    [backend]
    name = "aer:fake_fez"  # exact | aer | aer:<fake> | ibm:<fake or device> | braket:local | ...
    shots = 4000           # 0: exact expectation values (ideal simulators only); "auto": adaptive,
                           # decision-aware shots per example (pipeline/adaptive.py)
    confidence = 0.99      # "auto": stop an example when its decision is this sure
    max_shots_per_example = 0  # "auto": the cap (what the cost preflight prices); 0 = 16 x the pilot's
    pilot_shots = 16       # "auto": every circuit's first round
    optimization_level = 2
    seed_transpiler = 7
    seed_simulator = 1
    cluster = "local:2"    # simulators only: batches on a Dask cluster (or "tcp://host:8786"), checked
                           # by backends/cluster_address.py

    [split]
    cutting = "auto"       # off | auto | force
    max_overhead = 1000.0  # sampling-overhead budget for gate cuts
    segment = 0            # QLAM tokens per segment; 0 = whole sequence in one circuit; "auto"
    tomography = "pauli"   # hand-off state estimate: "pauli" (3^n bases) | "shadows" (random bases,
                           # median of means) | "fit" (the same bases, a depolarized pure state fitted)
    shadow_bases = 64      # shadows: random Pauli bases per sequence and hand-off
    shadow_groups = 8      # shadows: median-of-means groups
    prep = "mottonen"      # hand-off re-preparation: "mottonen" (exact) | "shallow" (fitted chain ansatz)
    prep_layers = 12       # shallow: CZ-chain layers
    purify = true          # re-prepare the dominant eigenvector (false: the mixed estimate itself)
    mixture = 4            # purify = false: eigenvectors re-prepared per sequence
    purify_readout = false # each segment's last readout from the purified estimate (segment = 1: every one)
    obp_steps = 0          # QLAM steps whose readout is back-propagated (no hand-off); "auto"
    obp_max_weight = 2     # OBP: Pauli terms kept up to this weight (0: any)
    obp_tol = 0.001        # OBP: and above this |coefficient|
    max_shots_per_image = 0  # budget of segment/obp "auto" (0: no limit)

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
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qssm.backends.cluster_address import parse_cluster
from qssm.errors import QssmError
from qssm.limits import MAX_SHOTS
from qssm.models.tasks import (
    GENERATED,
    MAX_T,
    MAX_TEST,
    TASK_FIELDS,
    test_set,
    test_size,
)
from qssm.paths import check_in_file, read_file
from qssm.pipeline.mitigation import parse_scales


@dataclass(frozen=True)
class DataSpec:
    n: int = 64
    seed: int = 10_007
    T: int = 0  # 0: the trained length
    path: str = ""  # CIFAR-10 tasks: the cifar-10-batches-py directory ("" = $QSSM_CIFAR10)


@dataclass(frozen=True)
class BackendSpec:
    name: str = "exact"
    shots: int | str = 0  # or "auto"
    confidence: float = 0.99
    max_shots_per_example: int = 0  # 0: CAP_PILOTS x the pilot round's
    pilot_shots: int = 16
    optimization_level: int = 2
    seed_transpiler: int = 7
    seed_simulator: int = 1
    layout: str = "default"  # default | noise_aware (pipeline.layout: lowest-error connected qubits)
    cluster: str = ""  # run simulator batches on Dask: "local:N" workers or a scheduler address "tcp://host:8786"
    mode: str = "auto"  # IBM execution mode: auto | session | batch (backends/ibm.py)

    CAP_PILOTS = 16  # max_shots_per_example = 0: an example spends at most this many pilot rounds' shots

    @property
    def adaptive(self) -> bool:
        return self.shots == "auto"

    @property
    def circuit_shots(self) -> int:
        """Shots per circuit of a fixed-shots job; the pilot round's of an adaptive one."""
        return self.pilot_shots if self.adaptive else self.shots


@dataclass(frozen=True)
class SplitSpec:
    cutting: str = "auto"
    max_overhead: float = 1000.0
    segment: int | str = 0  # or "auto"
    tomography: str = "pauli"
    shadow_bases: int = 64
    shadow_groups: int = 8
    prep: str = "mottonen"
    prep_layers: int = 12
    purify: bool = True
    mixture: int = 4
    purify_readout: bool = False
    obp_steps: int | str = 0  # or "auto"
    obp_max_weight: int = 2
    obp_tol: float = 0.001
    max_shots_per_image: int = 0

    @property
    def auto(self) -> bool:
        return self.segment == "auto" or self.obp_steps == "auto"


@dataclass(frozen=True)
class MitigationSpec:
    readout: bool | str = False  # or "mthree": mthree's M3 correction (pipeline/mthree_readout.py) instead of qssm's
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
CHOICES = {("split", "cutting"): ("off", "auto", "force"), ("split", "tomography"): ("pauli", "shadows", "fit"),
           ("split", "prep"): ("mottonen", "shallow"),
           ("backend", "layout"): ("default", "noise_aware"), ("backend", "mode"): ("auto", "session", "batch"), ("mitigation", "extrapolation"): ("richardson", "linear")}
AUTO = {("split", "segment"), ("split", "obp_steps"), ("backend", "shots")}  # these also take "auto" (qssm/app/auto.py, pipeline/adaptive.py choose)
NAMED = {("mitigation", "readout"): ("mthree",)}  # switches that also take a method's name
SEED = (0, 2**63 - 1)
# inclusive bounds of every number, with what a value means where that is not obvious; floats are
# also refused when not finite (nan would slip past every comparison, a budget included)
BOUNDS: dict[tuple[str, str], tuple[float, float | None, str]] = {
    ("data", "n"): (1, MAX_TEST, " (the first n test examples)"),
    ("data", "seed"): (*SEED, ""),
    ("data", "T"): (0, MAX_T, " (0 = the trained length)"),
    ("backend", "shots"): (0, MAX_SHOTS, " (0 = exact expectation values)"),
    ("backend", "confidence"): (0.5, 0.999999, " (the fraction of decisions equal to the infinite-shot ones)"),
    ("backend", "max_shots_per_example"): (0, 10**12, " (shots = \"auto\": the cap per example, 0 = 16 x the pilot round's)"),
    ("backend", "pilot_shots"): (1, MAX_SHOTS, " (shots = \"auto\": the first round's shots per circuit)"),
    ("backend", "optimization_level"): (0, 3, ""),
    ("backend", "seed_transpiler"): (*SEED, ""),
    ("backend", "seed_simulator"): (*SEED, ""),
    ("split", "max_overhead"): (0, None, ""),
    ("split", "segment"): (0, MAX_T, " (QLAM tokens per segment, 0 = whole sequence)"),
    ("split", "shadow_bases"): (1, 729, " (random Pauli bases per hand-off)"),
    ("split", "shadow_groups"): (1, 729, " (median-of-means groups)"),
    ("split", "prep_layers"): (1, 64, " (CZ-chain layers of the shallow preparation)"),
    ("split", "mixture"): (1, 64, " (eigenvectors per sequence when purify = false)"),
    ("split", "obp_steps"): (0, MAX_T, " (QLAM steps back-propagated, 0 = none)"),
    ("split", "obp_max_weight"): (0, 12, " (0 = any weight)"),
    ("split", "obp_tol"): (0, 1, ""),
    ("split", "max_shots_per_image"): (0, None, " (0 = no limit)"),
    ("mitigation", "readout_shots"): (0, MAX_SHOTS, " (0 = [backend] shots)"),
    ("mitigation", "resilience_level"): (-1, 2, " (IBM runtime levels 0..2, -1 = unset)"),
    ("budget", "max_cost_usd"): (0, None, " (0 = no limit)"),
    ("budget", "max_qpu_seconds"): (0, None, " (0 = no limit)"),
}


def _bounded(where: str, name: str, key: str, value: float) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise QssmError(f"{where}: {name}.{key} must be a finite number, got {value}")
    lo, hi, note = BOUNDS[name, key]
    if value < lo or (hi is not None and value > hi):
        span = f">= {lo}" if hi is None else f"{lo}..{hi}"
        raise QssmError(f"{where}: {name}.{key} must be {span}{note}, got {value}")


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
        if (name, key) in AUTO and value == "auto" or value in NAMED.get((name, key), ()):
            values[key] = value
            continue
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not want:
            kind = (f'{want.__name__} or "auto"' if (name, key) in AUTO else
                    " or ".join([want.__name__, *(f'"{n}"' for n in NAMED[name, key])]) if (name, key) in NAMED
                    else want.__name__)
            raise QssmError(f"{where}: {name}.{key} must be {kind}, got {value!r:.80}")
        if want in (int, float):
            _bounded(where, name, key, value)
        if (name, key) == ("backend", "cluster"):
            try:
                value = parse_cluster(value)
            except QssmError as e:
                raise QssmError(f"{where}: backend.cluster: {e}") from None
        if (name, key) in CHOICES and value not in CHOICES[name, key]:
            raise QssmError(f"{where}: {name}.{key} must be one of {', '.join(CHOICES[name, key])}, got {value!r:.80}")
        values[key] = value
    if "zne_scales" in values:  # a malformed list is refused here, not when mitigation starts

        try:
            parse_scales(values["zne_scales"])
        except QssmError as e:
            raise QssmError(f"{where}: {e}") from None
    return cls(**values)


def parse_spec(raw: dict[str, Any], where: str = "spec", base: Path | None = None) -> JobSpec:
    unknown = set(raw) - set(SECTIONS) - {"model"}
    if unknown:
        raise QssmError(f"{where}: unknown section(s) {sorted(unknown)}; valid: model, {', '.join(SECTIONS)}")
    model = raw.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("checkpoint"), str):
        raise QssmError(f'{where}: missing [model] checkpoint = "path/to/model.safetensors"')
    if set(model) - {"checkpoint"}:
        raise QssmError(f"{where}: unknown key(s) in [model]: {sorted(set(model) - {'checkpoint'})}")
    if not model["checkpoint"].strip():
        raise QssmError(f'{where}: checkpoint path is empty; fix [model] checkpoint = "path/to/model.safetensors"')
    ckpt = Path(model["checkpoint"])
    if not ckpt.is_absolute() and base is not None and not ckpt.exists() and (base / ckpt).exists():
        ckpt = base / ckpt
    check_in_file(ckpt, f"{where}: checkpoint", "fix [model] checkpoint")
    parts = {name: _section(where, name, cls, raw.get(name, {})) for name, cls in SECTIONS.items()}
    split = parts["split"]
    if split.segment and split.obp_steps and "auto" not in (split.segment, split.obp_steps):
        raise QssmError(f"{where}: split.segment and split.obp_steps are two ways to shorten QLAM circuits; "
                        f"set one of them (or both to \"auto\")")
    return JobSpec(checkpoint=str(ckpt), source=where, **parts)


def load_spec(path: str | Path) -> JobSpec:
    data = read_file(path, "spec file", "see examples/ for job specs")
    path = Path(path)
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise QssmError(f"{path}: not valid TOML (not UTF-8 text); a job spec is a TOML file, see examples/") from None
    except tomllib.TOMLDecodeError as e:
        raise QssmError(f"{path}: not valid TOML ({e})") from None
    return parse_spec(raw, str(path), base=path.parent.parent)


def check_spec_against_model(spec: JobSpec, model) -> None:
    """The checks that need the model's config: [data] n and T against its task, [split] segment
    against its kind. Called once per job, before anything runs or is stored."""
    cfg = model.cfg
    where, task = spec.source or "spec", cfg.task
    name = task["name"]
    if spec.data.T:
        if name not in GENERATED:
            raise QssmError(f"{where}: data.T sets the length of generated sequences, and {name} ({cfg.kind}) has "
                            f"fixed-length inputs; remove [data] T")
        lo = TASK_FIELDS[name]["T"][1]
        if spec.data.T < lo:
            raise QssmError(f"{where}: data.T must be 0 (the trained length) or {lo}..{MAX_T} for {name}, got {spec.data.T}")
    if (spec.split.segment or spec.split.obp_steps) and not model.splits:
        key = "segment" if spec.split.segment else "obp_steps"
        raise QssmError(f"{where}: split.{key} shortens a QLAM memory's circuits, and {spec.checkpoint} is a "
                        f"{cfg.kind} model; remove [split] {key}")
    steps = spec.split.obp_steps
    if model.splits and isinstance(steps, int) and steps:
        length = spec.data.T or task.get("T") or test_set(task, root=spec.data.path or None).inputs.shape[1]
        if steps >= length:
            raise QssmError(f"{where}: split.obp_steps = {steps} back-propagates through every one of the "
                            f"{length} memory steps, leaving nothing to run; use 1..{length - 1}")
    size = test_size(task, spec.data.path or None)
    if spec.data.n > size:
        raise QssmError(f"{where}: data.n = {spec.data.n}, but {name} has {size} test examples; use n <= {size}")
