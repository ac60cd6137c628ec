"""qssm devices: every target a spec's [backend] name or --backend can name."""

from __future__ import annotations

import json

from qssm.backends.catalog import catalog
from qssm.commands import help_for


def register(sub) -> None:
    p = sub.add_parser("devices", help=help_for("devices"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    rows = catalog()
    if args.json:
        print(json.dumps({"targets": rows}))
        return 0
    print(f"{'names':<54}{'qubits':>7}  {'snapshot':<26}{'QPU price':<16}native gates")
    for r in rows:
        print(f"{', '.join(r['names']):<54}{r['qubits'] or 'any':>7}  {r['snapshot'] or '-':<26}"
              f"{r['price_source']:<16}{r['native_gates']}")
    print("\nprice: simulators and snapshots run here for free; a snapshot's QPU (ibm:<device>, braket:<device>) is "
          "priced from IBM's list price or the snapshot's per-task + per-shot price (`--json` shows each)")
    return 0
