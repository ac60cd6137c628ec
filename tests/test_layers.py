"""The layers of docs/architecture.md, enforced: every first-party import, at module level or inside
a function, points to its own layer or one below it, so no package imports another in a cycle.

    base < models < circuits < backends < pipeline < jobs < app < cli
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"qssm": "qssm", "models": "qssm.models", "circuits": "qssm.circuits", "pipeline": "qssm.pipeline",
            "backends": "qssm.backends", "jobs": "qssm.jobs"}
ORDER = ["base", "models", "circuits", "backends", "pipeline", "jobs", "app", "cli"]
BASE = {"qssm.errors", "qssm.paths", "qssm.types", "qssm.redact", "qssm.limits", "qssm.version"}
MAX_FUNCTION_LEVEL = 15  # first-party imports inside functions, each with a comment saying why


def layer(module: str) -> str:
    if module in BASE:
        return "base"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("models", "circuits", "backends", "pipeline", "jobs", "app"):
        return parts[1]
    return "cli"  # qssm (the lazy API), qssm.api, qssm.cli, qssm.args, qssm.commands.*, qssm.report


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def imports(path: Path) -> list[tuple[str, bool, int, str]]:
    """(imported module, inside a function, line, source line) for every first-party import."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    nested = {id(sub) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
              for sub in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qssm") and not node.level:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "qssm"]
        for name in names:
            found.append((name, id(node) in nested, node.lineno, lines[node.lineno - 1]))
    return found


def test_every_import_points_down_the_layers():
    wrong = []
    for module, path in modules().items():
        own = ORDER.index(layer(module))
        for target, _, line, _ in imports(path):
            if ORDER.index(layer(target)) > own:
                wrong.append(f"{path.relative_to(ROOT)}:{line} {module} ({layer(module)}) imports {target} "
                             f"({layer(target)})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_package_cycles():
    graph: dict[str, set[str]] = {}
    for module, path in modules().items():
        for target, *_ in imports(path):
            if layer(target) != layer(module):
                graph.setdefault(layer(module), set()).add(layer(target))

    def reaches(a: str, b: str, seen=()) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, (*seen, n))) for n in graph.get(a, ()))

    assert not [p for p in graph if reaches(p, p)], graph


def test_function_level_imports_are_few_and_justified():
    found = [(path, line, text) for module, path in modules().items() for _, nested, line, text in imports(path)
             if nested]
    assert len(found) <= MAX_FUNCTION_LEVEL, found
    assert all("#" in text for _, _, text in found), [f for f in found if "#" not in f[2]]


def test_the_command_line_starts_without_torch():
    """`qssm --help` lists every command from a table; only the chosen command's module is imported."""
    code = "import sys; from qssm.cli import build_parser; build_parser(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qssm.cli", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 5  # a loose bound for a loaded machine; bench/speed/cli_startup.py measures


def test_every_command_registers():
    """All subcommands parse their own options when chosen (the table names each one's module)."""
    from qssm.cli import build_parser
    from qssm.commands import COMMANDS

    parser = build_parser()
    assert set(COMMANDS) <= set(parser._subparsers._group_actions[0].choices)
