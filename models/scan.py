"""The selective-SSM recurrence, in two forms that must agree.

h_t = exp(logA_t) * h_{t-1} + Bx_t      (per channel d and state n)
y_t = sum_n h_t C_t

`scan_step` is one token (the generation cache); `scan_chunked` is the parallel form over a whole
sequence, quadratic inside chunks and recurrent across them, as in ssd_minimal.py of
state-spaces/mamba; `scan_sequential` is the linear-work loop. `scan` picks per device: on a CPU the
loop does L times less arithmetic than a chunk of length L and wins (B=256, T=16, D=16, N=8:
42 ms chunked vs a few ms sequential); accelerators take the parallel form. Segment sums are built by a masked cumsum, never as differences of running
sums, so long sequences lose no precision.
"""

from __future__ import annotations

import torch


def segsum(x: torch.Tensor) -> torch.Tensor:
    """x (..., L) -> (..., L, L) with out[..., t, s] = sum_{s < u <= t} x[u], -inf above the diagonal."""
    L = x.shape[-1]
    x = x[..., None].expand(*x.shape, L)  # [..., u, s] = x[u]
    below = torch.tril(torch.ones(L, L, dtype=torch.bool, device=x.device), diagonal=-1)
    x = x.masked_fill(~below, 0)
    out = torch.cumsum(x, dim=-2)
    keep = torch.tril(torch.ones(L, L, dtype=torch.bool, device=x.device), diagonal=0)
    return out.masked_fill(~keep, float("-inf"))


def scan_chunked(
    logA: torch.Tensor, Bx: torch.Tensor, h0: torch.Tensor | None = None, chunk: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """logA, Bx: (B, T, D, N). Returns all states (B, T, D, N) and the final state (B, D, N)."""
    b, t, d, n = logA.shape
    h = torch.zeros(b, d, n, dtype=Bx.dtype, device=Bx.device) if h0 is None else h0
    states = []
    for s in range(0, t, chunk):
        la = logA[:, s : s + chunk].permute(0, 2, 3, 1)  # (B, D, N, L)
        bx = Bx[:, s : s + chunk].permute(0, 2, 3, 1)
        decay = torch.exp(segsum(la))  # (B, D, N, L, L)
        intra = torch.einsum("bdnts,bdns->bdnt", decay, bx)
        carried = torch.exp(torch.cumsum(la, dim=-1)) * h[..., None]
        hs = (intra + carried).permute(0, 3, 1, 2)  # (B, L, D, N)
        states.append(hs)
        h = hs[:, -1]
    return torch.cat(states, dim=1), h


def scan_step(logA: torch.Tensor, Bx: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One token: logA, Bx, h are (B, D, N)."""
    return torch.exp(logA) * h + Bx


def scan_sequential(
    logA: torch.Tensor, Bx: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as scan_chunked, one token at a time (linear work)."""
    b, t, d, n = logA.shape
    h = torch.zeros(b, d, n, dtype=Bx.dtype, device=Bx.device) if h0 is None else h0
    decay = torch.exp(logA)
    states = []
    for i in range(t):
        h = decay[:, i] * h + Bx[:, i]
        states.append(h)
    return torch.stack(states, dim=1), h


def scan(logA: torch.Tensor, Bx: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if logA.device.type == "cpu":
        return scan_sequential(logA, Bx, h0)
    return scan_chunked(logA, Bx, h0)
