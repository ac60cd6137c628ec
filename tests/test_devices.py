"""Device discipline of the torch simulators: with the model on another device, the forward pass
(circuits, recurrence, readout) creates and touches no CPU tensors, so it runs on CUDA as it is.
Checked on PyTorch's "meta" device (no GPU here): a mode records every torch call whose inputs or
outputs include a CPU tensor (after one warm-up pass has built the per-device lookup tables)."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from qssm.models import checkpoint
from qssm.models.scan import scan_chunked, scan_sequential
from qssm.models.tasks import test_set


class CPUTensors(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        leaves = tree_flatten((args, kwargs or {}, out))[0]
        if any(isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dim() > 0 for t in leaves):
            self.calls.append(getattr(func, "__name__", str(func)))
        return out


@pytest.mark.parametrize("name", ["qmamba-haystack", "qlam-digits", "qlam-digits-chain", "qlam-smnist",
                                  "qlam-smnist-chain"])
def test_forward_allocates_nothing_on_the_cpu(name):
    model, _ = checkpoint.load(f"checkpoints/{name}.safetensors")
    x = test_set(model.cfg.task).inputs[:3]
    model = model.double().to("meta")
    x = (x.double() if x.is_floating_point() else x).to("meta")
    with torch.no_grad():
        model(x)  # builds the per-device tables once (bit masks, Pauli coefficients)
        with CPUTensors() as mode:
            out = model(x)
    assert out.device.type == "meta" and not mode.calls, sorted(set(mode.calls))


@pytest.mark.parametrize("scan", [scan_chunked, scan_sequential])
def test_scans_allocate_nothing_on_the_cpu(scan):
    logA = -torch.rand(2, 9, 3, 4, device="meta")
    with CPUTensors() as mode:
        hs, h = scan(logA, torch.rand(2, 9, 3, 4, device="meta"))
    assert hs.device.type == "meta" and not mode.calls, sorted(set(mode.calls))


def test_the_mode_sees_cpu_tensors():
    """The check can fail: a CPU tensor mixed into a meta computation is reported."""
    with CPUTensors() as mode:
        torch.zeros(2, 3, device="meta") @ torch.zeros(3, 2)
    assert mode.calls
