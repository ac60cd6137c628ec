"""One module per group of `qssm` subcommands, each with `register(subparsers)`.

COMMANDS names every subcommand, its module and its one-line help: `qssm --help` lists them from
this table alone, and only the chosen command's module is imported (with torch, Qiskit and the
SDKs it needs), so the command line starts fast."""

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a preset model and write its checkpoint"),
    "eval": ("eval", "evaluate a checkpoint on its test split"),
    "export": ("export", "export a checkpoint's circuit templates (OpenQASM 3, QPY)"),
    "devices": ("devices", "list every target: simulators, IBM and Braket device snapshots"),
    "run": ("run", "dry-run a job spec on a simulator backend and score it against exact"),
    "estimate": ("estimate", "price a job spec as submit would (no credentials, nothing recorded)"),
    "plan": ("plan", "predict agreement against shots per circuit and recommend the fewest (dm: backends)"),
    "compile": ("compile", "transpilation report per target: depth, 2q gates, swaps, success, cuts"),
    "report": ("report", "write an HTML + JSON report for a job spec or a stored job"),
    "generate": ("generate", "generate tokens with a QMamba checkpoint (prefill + cached decode)"),
    "submit": ("jobs", "estimate cost, record a job and run it in the background (or --wait)"),
    "status": ("jobs", "list jobs, or show one job and its batches"),
    "results": ("jobs", "print a finished job's report"),
    "cancel": ("jobs", "cancel a job's in-flight provider jobs and mark it cancelled"),
    "resume": ("jobs", "continue a job from the store (after a crash, a reboot, a closed laptop or a cancel)"),
    "store": ("store", "manage job store files (adopt a store an older qssm wrote)"),
}


def help_for(name: str) -> str:
    return COMMANDS[name][1]
