"""QMamba: a selective SSM whose per-token parameters (A, B, C, Delta) come from quantum circuits.

Per layer and token: angles_s = pi tanh(W_s x_t + b_s) encode x_t into four n-qubit
sub-circuits s in {A, B, C, Delta}; their <Z> readouts z_s set
    Delta_t = softplus(W_D z_Delta + b_D),  A_t = -exp(a_log + alpha z_A),
    B_t = W_B z_B,  C_t = W_C z_C,
and the recurrence h_t = exp(Delta_t A_t) h_{t-1} + Delta_t B_t x_t,  y_t = h_t C_t + D x_t.
The circuits depend on x_t only, so a layer's circuits for every token form one batch: one round
trip per layer, whatever the sequence length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qssm.models import scan as scans
from qssm.models.ansatz import n_weights, reuploading_circuit
from qssm.models.config import QMambaConfig
from qssm.models.evaluator import Evaluator, ExactEvaluator, QuantumCall, z_labels
from qssm.models.scan import scan_step
from qssm.models.tasks import binomial_stderr


class QMambaLayer(nn.Module):
    def __init__(self, cfg: QMambaConfig, index: int):
        super().__init__()
        self.cfg, self.index = cfg, index
        d, n = cfg.d_model, cfg.n_qubits
        self.norm = nn.RMSNorm(d)
        self.encode = nn.ModuleDict({s: nn.Linear(d, n) for s in cfg.SUBCIRCUITS})
        self.ops = {s: tuple(reuploading_circuit(cfg.ansatz(s))) for s in cfg.SUBCIRCUITS}
        if cfg.quantum:
            self.qweights = nn.ParameterDict(
                {s: nn.Parameter(0.3 * torch.randn(n_weights(list(self.ops[s])))) for s in cfg.SUBCIRCUITS}
            )
        else:  # classical baseline: each circuit becomes tanh(Linear(angles)), n^2 + n parameters
            self.classical = nn.ModuleDict({s: nn.Linear(n, n) for s in cfg.SUBCIRCUITS})
        self.to_delta = nn.Linear(n, d)
        self.to_b = nn.Linear(n, n, bias=False)
        self.to_c = nn.Linear(n, n, bias=False)
        self.a_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d, 1))
        self.alpha = nn.Parameter(torch.tensor(cfg.alpha_init))
        self.d_skip = nn.Parameter(torch.ones(d))
        self.out_proj = nn.Linear(d, d)
        with torch.no_grad():  # start with a slow decay, as Mamba's dt initialisation does
            self.to_delta.bias.fill_(math.log(math.expm1(0.05)))

    def name(self, sub: str) -> str:
        return f"layer{self.index}.{sub}"

    def calls(self, x: torch.Tensor) -> list[QuantumCall]:
        """The layer's quantum work for normalized inputs x (..., D): one call per sub-circuit."""
        n = self.cfg.n_qubits
        return [
            QuantumCall(
                self.name(s), self.ops[s], n, self.qweights[s],
                math.pi * torch.tanh(self.encode[s](x)), z_labels(n),
            )
            for s in self.cfg.SUBCIRCUITS
        ]

    def readouts(self, x: torch.Tensor, evaluator: Evaluator) -> dict[str, torch.Tensor]:
        if self.cfg.quantum:
            calls = self.calls(x)
            return dict(zip(self.cfg.SUBCIRCUITS, evaluator.evaluate(calls)))
        return {
            s: torch.tanh(self.classical[s](math.pi * torch.tanh(self.encode[s](x))))
            for s in self.cfg.SUBCIRCUITS
        }

    def selective(self, x: torch.Tensor, z: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Discretized (logAbar, Bbar x), each (..., D, N), from inputs and circuit readouts."""
        delta = F.softplus(self.to_delta(z["Delta"]))  # (..., D)
        a = -torch.exp(self.a_log + self.alpha * z["A"][..., None, :])  # (..., D, N)
        b = self.to_b(z["B"])  # (..., N)
        log_abar = delta[..., None] * a
        bx = (delta * x)[..., None] * b[..., None, :]  # one (..., D, N) product instead of two
        return log_abar, bx

    def output(self, h: torch.Tensor, x: torch.Tensor, z: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.to_c(z["C"])
        y = (h * c[..., None, :]).sum(-1) + self.d_skip * x
        return self.out_proj(y)

    def forward(self, u: torch.Tensor, evaluator: Evaluator):
        """Parallel form over (B, T, D). Returns (new residual stream, final state)."""
        x = self.norm(u)
        z = self.readouts(x, evaluator)
        log_abar, bx = self.selective(x, z)
        hs, h = scans.scan(log_abar, bx)
        return u + self.output(hs, x, z), h

    def step(self, u: torch.Tensor, h: torch.Tensor, evaluator: Evaluator):
        """Step form for one token (B, D) with cache h (B, D, N)."""
        x = self.norm(u)
        z = {k: v[:, 0] for k, v in self.readouts(x[:, None], evaluator).items()}
        log_abar, bx = self.selective(x, z)
        h = scan_step(log_abar, bx, h)
        return u + self.output(h, x, z), h


@dataclass
class Cache:
    """O(1) per-layer generation state."""

    h: list[torch.Tensor]


# haystack needle depth: its position as a fraction of the sequence, 0 = first token (furthest from the query)
DEPTH_QUARTILES = ("first quarter (furthest from the query)", "second quarter", "third quarter",
                   "last quarter (nearest the query)")


class QMamba(nn.Module):
    # The model contract the application layer reads (docs/architecture.md, "Models").
    token_table = True  # layer 1's circuits depend on the token id only: measured once per vocabulary
    generates = True  # decodes token by token (`qssm generate`)
    splits = False  # [split] segment / obp_steps apply to QLAM memories only

    def __init__(self, cfg: QMambaConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(QMambaLayer(cfg, i) for i in range(cfg.n_layers))
        self.norm_f = nn.RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward(self, tokens: torch.Tensor, evaluator: Evaluator | None = None, return_cache: bool = False):
        """tokens (B, T) -> logits (B, T, V); one evaluator round trip per layer."""
        evaluator = evaluator or ExactEvaluator()
        u = self.embed(tokens)
        hs = []
        for layer in self.layers:
            u, h = layer(u, evaluator)
            hs.append(h)
        logits = self.head(self.norm_f(u))
        return (logits, Cache(hs)) if return_cache else logits

    def round_trips(self, T: int, segment: int = 0) -> int:
        """Evaluator round trips per forward pass: one per layer, whatever the length."""
        return self.cfg.n_layers

    def report_extras(self, logits: torch.Tensor, targets: torch.Tensor, meta: dict) -> dict:
        """Haystack: accuracy per quartile of the needle's position, with its count and standard error."""
        if "depth" not in meta:
            return {}
        correct = (logits.argmax(-1) == targets).numpy()
        bins = np.minimum((np.asarray(meta["depth"]) * 4).astype(int), 3)
        out = []
        for q, where in enumerate(DEPTH_QUARTILES):
            sel = correct[bins == q]
            acc = float(sel.mean()) if len(sel) else None
            out.append({"quartile": f"q{q + 1}", "needle_position": where, "n": int(len(sel)), "accuracy": acc,
                        "accuracy_stderr": binomial_stderr(acc, len(sel)) if len(sel) else None})
        return {"accuracy_by_depth": out}

    def empty_cache(self, batch: int) -> Cache:
        n, d = self.cfg.n_qubits, self.cfg.d_model
        w = self.embed.weight
        return Cache([torch.zeros(batch, d, n, dtype=w.dtype, device=w.device) for _ in self.layers])

    def step(self, token: torch.Tensor, cache: Cache, evaluator: Evaluator | None = None):
        """token (B,) -> logits (B, V), updated cache; n_layers round trips of B bindings each."""
        evaluator = evaluator or ExactEvaluator()
        u = self.embed(token)
        hs = []
        for layer, h in zip(self.layers, cache.h):
            u, h = layer.step(u, h, evaluator)
            hs.append(h)
        return self.head(self.norm_f(u)), Cache(hs)

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        n_new: int,
        evaluator: Evaluator | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        prefill: tuple[torch.Tensor, Cache] | None = None,
    ) -> torch.Tensor:
        """Prefill in parallel form, then decode with the O(1) cache. temperature 0 is greedy.
        `prefill`: the (logits, cache) of `forward(prompt, return_cache=True)` when the caller has
        run it already (on a QPU a second prefill is paid for again)."""
        evaluator = evaluator or ExactEvaluator()
        gen = torch.Generator().manual_seed(seed)
        logits, cache = prefill if prefill is not None else self.forward(prompt, evaluator, return_cache=True)
        last = logits[:, -1]
        out = []
        for _ in range(n_new):
            if temperature > 0:
                tok = torch.multinomial(torch.softmax(last / temperature, -1), 1, generator=gen)[:, 0]
            else:
                tok = last.argmax(-1)
            out.append(tok)
            last, cache = self.step(tok, cache, evaluator)
        return torch.stack(out, dim=1)
