"""The QMamba layer-1 token table.

Layer 1's circuit inputs depend only on the token id (norm(embed(token)) -> angles), so its
quantum outputs form a table of vocab_size rows per sub-circuit. It is measured once per backend
(and calibration), stored with the backend's identity, and every later request reads layer 1 from
it: no round trip for layer 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from qssm.circuits.templates import subcircuit_template
from qssm.errors import QssmError
from qssm.models.evaluator import Evaluator, QuantumCall


@dataclass
class TokenTable:
    backend: str  # backend identity: name, calibration, shots, seeds
    hashes: dict[str, str]  # call name -> template hash the table was measured with
    angles: dict[str, np.ndarray]  # call name -> (V, n_in) input rows, one per token
    values: dict[str, np.ndarray]  # call name -> (V, n_obs) expectation values
    tol: float = 1e-5
    # call name -> (V, n_obs, n_obs) covariance of the values at the table's shots (absent: exact)
    covariance: dict[str, np.ndarray] = field(default_factory=dict)

    def lookup(self, call: QuantumCall) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Values and their covariance for a call whose every input row is a table row (else None)."""
        if call.name not in self.values or subcircuit_template(call).hash != self.hashes[call.name]:
            return None
        rows = call.inputs.detach().reshape(-1, call.inputs.shape[-1]).double()
        table = torch.as_tensor(self.angles[call.name])
        dist = torch.cdist(rows, table)
        best = dist.argmin(dim=1)
        if (dist[torch.arange(len(rows)), best] > self.tol).any():
            return None
        vals = torch.as_tensor(self.values[call.name], dtype=call.inputs.dtype)
        k = vals.shape[-1]
        cov = torch.as_tensor(self.covariance.get(call.name, np.zeros((len(vals), k, k))), dtype=vals.dtype)
        shape = (*call.inputs.shape[:-1], k)
        return vals[best].reshape(shape), cov[best].reshape(*shape, k)

    def save(self, path: str | Path) -> None:
        arrays = {f"angles/{k}": v for k, v in self.angles.items()}
        arrays.update({f"values/{k}": v for k, v in self.values.items()})
        arrays.update({f"covariance/{k}": v for k, v in self.covariance.items()})
        meta = json.dumps({"backend": self.backend, "hashes": self.hashes})
        np.savez(path, __meta__=np.frombuffer(meta.encode(), dtype=np.uint8), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "TokenTable":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["__meta__"]).decode())
                angles = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("angles/")}
                values = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("values/")}
                covariance = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("covariance/")}
        except (OSError, ValueError, KeyError) as e:
            raise QssmError(f"token table {path} is unreadable ({e}); delete it to rebuild") from None
        return cls(meta["backend"], meta["hashes"], angles, values, covariance=covariance)


@torch.no_grad()
def build_token_table(model, evaluator: Evaluator, backend: str) -> TokenTable:
    """Measure layer 1's sub-circuits for every vocabulary entry in one round trip."""
    layer = model.layers[0]
    x = layer.norm(model.embed.weight)  # (V, D): every token's layer-1 input
    calls = layer.calls(x)
    values = evaluator.evaluate(calls)
    measured = getattr(evaluator, "covariance", {})  # a PipelineEvaluator's; the exact simulator's values have none
    return TokenTable(
        backend=backend,
        hashes={c.name: subcircuit_template(c).hash for c in calls},
        angles={c.name: c.inputs.double().numpy() for c in calls},
        values={c.name: v.double().numpy() for c, v in zip(calls, values)},
        covariance={c.name: measured[c.name].double().numpy() for c in calls if c.name in measured},
    )
