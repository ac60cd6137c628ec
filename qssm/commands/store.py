"""qssm store adopt PATH: mark a job store that an older qssm wrote (its tables, no marker) as a
qssm store. The one command that writes a marker: reading a store never writes to it."""

from __future__ import annotations

from qssm.commands import help_for
from qssm.errors import QssmError
from qssm.jobs.store import JobStore


def register(sub) -> None:
    p = sub.add_parser("store", help=help_for("store"))
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("adopt", help="mark a store written by an older qssm as a qssm store")
    a.add_argument("path", help="the store file")
    a.set_defaults(func=adopt)


def adopt(args) -> int:
    if not args.path.strip():
        raise QssmError("store path is empty; give the store file to adopt")
    store, marked = JobStore.adopt(args.path)
    store.close()
    print(f"adopted {store.path}: marked as a qssm store" if marked else f"{store.path} is already a qssm store")
    return 0
