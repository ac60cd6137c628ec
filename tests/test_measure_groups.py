"""The measure stage's qubit-wise-commuting grouping (pipeline/measure.py) against Qiskit's
`PauliList.group_commuting(qubit_wise=True)`: qssm keeps its own first-fit grouping because it is
deterministic in the order the observables come (the batch keys of stored jobs depend on it) and
needs no more groups than Qiskit's graph colouring on every observable set qssm measures."""

from __future__ import annotations

import pytest
from qiskit.quantum_info import PauliList, SparsePauliOp

from qssm.models import checkpoint
from qssm.pipeline.measure import measurement_groups
from qssm.pipeline.tomography import tomography_paulis


def _sets():
    out = {f"tomography {n}q": list(tomography_paulis(n)) for n in (2, 4, 6)}
    for name in ("qlam-digits-chain", "qlam-smnist-chain"):
        out[name] = list(checkpoint.load(f"checkpoints/{name}.safetensors")[0].cfg.paulis())
    return out


@pytest.mark.parametrize("name,labels", list(_sets().items()), ids=list(_sets()))
def test_groups_are_qubit_wise_commuting_cover_every_term_and_are_no_more_than_qiskits(name, labels):
    groups = measurement_groups([SparsePauliOp(label) for label in labels])
    assert sorted(i for g in groups for i, _ in g.members) == list(range(len(labels)))  # each term once
    for g in groups:
        for i, _ in g.members:
            for a, b in zip(labels[i], "".join(reversed(g.basis))):
                assert a == "I" or a == b, (labels[i], g.basis)
    assert len(groups) <= len(PauliList(labels).group_commuting(qubit_wise=True))
