"""qssm export CHECKPOINT --out DIR: the model's circuits as OpenQASM 3 (standard, and for Braket) + QPY + manifest."""

from __future__ import annotations

from qssm.circuits.export import export_model
from qssm.commands import help_for
from qssm.models import checkpoint
from qssm.paths import check_out_dir


def register(sub) -> None:
    p = sub.add_parser("export", help=help_for("export"))
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args) -> int:
    check_out_dir(args.out)
    model, _ = checkpoint.load(args.checkpoint)
    for t in export_model(model, args.out):
        print(f"{t['name']:<14} {t['qubits']} qubits  {t['inputs']:>3} inputs  depth {t['depth']:>3}  {t['hash']}")
    print(f"wrote {args.out}/manifest.json, templates.qpy and per template NAME.qasm (standard OpenQASM 3) and "
          f"NAME.braket.qasm (Braket's built-in gates)")
    return 0
