"""QLAM: quantum long-attention memory over sequential images (DESIGN §1.2).

The memory is an n-qubit state: |psi_t> = W(theta) R(x_t) |psi_{t-1}>, R = RY then RZ per qubit
from angles pi tanh(W_in x_t + b) (with re-uploading, r such rotation layers per step, each followed
by its own block W_j). Readout is query-dependent: y_t = <psi_t| O(q_t) |psi_t> with
O(q) = sum_k w_k(q) P_k over a fixed Pauli set, so the circuits measure m_t = (<P_k>)_k and the
classical side applies w(q_t). A linear head classifies [y_T, mean_t y_t, m_T] (and mean_t m_t
with cfg.pool_memory).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qssm.models.ansatz import memory_step
from qssm.models.config import QLAMConfig
from qssm.models.evaluator import Evaluator, ExactEvaluator, QuantumCall


class QLAM(nn.Module):
    # The model contract the application layer reads (docs/architecture.md, "Models"): how many
    # round trips a forward pass takes, whether [split] levers apply, what a report adds.
    token_table = False  # no circuit depends on the token id alone
    generates = False  # decodes token by token (`qssm generate`)
    splits = True  # [split] segment / obp_steps shorten the memory's circuits

    def __init__(self, cfg: QLAMConfig):
        super().__init__()
        self.cfg = cfg
        n, k = cfg.n_qubits, len(cfg.paulis())
        self.n_obs = k
        self.encode = nn.Linear(cfg.input_dim, 2 * n * cfg.reupload)
        self.ops = tuple(memory_step(cfg.memory_ansatz()))
        if cfg.quantum:
            self.w = nn.Parameter(cfg.w_init * torch.randn(cfg.w_budget))
        else:  # classical baseline: a tanh RNN with a K-dimensional state in place of the qubits
            self.cell = nn.RNNCell(2 * n * cfg.reupload, k)
        if cfg.readout_norm == "rms":
            self.readout_gain = nn.Parameter(torch.ones(k))
        self.query = nn.Linear(cfg.input_dim, cfg.n_heads * k)
        self.head = nn.Linear(2 * cfg.n_heads + k * (2 if cfg.pool_memory else 1), cfg.n_classes)

    def round_trips(self, T: int, segment: int = 0) -> int:
        """Evaluator round trips for sequences of T tokens: one per segment of `segment` tokens."""
        return math.ceil(T / (segment or T))

    def report_extras(self, logits: torch.Tensor, targets: torch.Tensor, meta: dict) -> dict:
        return {}

    def memory_call(self, x: torch.Tensor) -> QuantumCall:
        angles = math.pi * torch.tanh(self.encode(x))
        return QuantumCall("memory", self.ops, self.cfg.n_qubits, self.w, angles,
                           tuple(self.cfg.paulis()), sequential=True)

    def memory(self, x: torch.Tensor, evaluator: Evaluator) -> torch.Tensor:
        """(B, T, input_dim) -> readouts m (B, T, K), one per step (normalized per cfg.readout_norm)."""
        if self.cfg.quantum:
            return self.normalize(evaluator.evaluate([self.memory_call(x)])[0])
        angles = math.pi * torch.tanh(self.encode(x))
        h = torch.zeros(x.shape[0], self.n_obs, dtype=x.dtype, device=x.device)
        out = []
        for t in range(x.shape[1]):
            h = self.cell(angles[:, t], h)
            out.append(h)
        return self.normalize(torch.stack(out, 1))

    def normalize(self, m: torch.Tensor) -> torch.Tensor:
        """readout_norm "rms": m_t / sqrt(mean_k m_tk^2 + 1e-4) * gain_k, per example and step."""
        if self.cfg.readout_norm != "rms":
            return m
        return m / (m.pow(2).mean(-1, keepdim=True) + 1e-4).sqrt() * self.readout_gain

    def classify(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        w = self.query(x).view(b, t, self.cfg.n_heads, self.n_obs)
        y = (w * m[:, :, None, :]).sum(-1)  # (B, T, H): <O(q_t)>
        feats = [y[:, -1], y.mean(1), m[:, -1]] + ([m.mean(1)] if self.cfg.pool_memory else [])
        return self.head(torch.cat(feats, dim=-1))

    def forward(self, x: torch.Tensor, evaluator: Evaluator | None = None) -> torch.Tensor:
        """x (B, T, input_dim) -> class logits (B, n_classes)."""
        return self.classify(x, self.memory(x, evaluator or ExactEvaluator()))
