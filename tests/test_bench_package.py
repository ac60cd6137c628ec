"""bench/ as a package (docs/architecture.md, "bench/"): every script imports as a module without
running, none patches sys.path or imports a private product name, and the product never imports it."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import bench

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("qssm", "models", "circuits", "backends", "pipeline", "jobs")


def _sources(*folders: str):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_every_bench_module_imports_without_running():
    names = [m.name for m in pkgutil.walk_packages(bench.__path__, "bench.") if not m.name.endswith("__main__")]
    assert {"bench.harness", "bench.speed.suite", "bench.experiments.shots", "bench.generate.qlam_split",
            "bench.generate.model_evals"} <= set(names)
    for name in names:
        importlib.import_module(name)  # heavy work sits under main(): importing runs nothing


def test_bench_patches_no_path_and_imports_only_public_product_names():
    wrong = []
    for path in _sources("bench"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} uses sys.path")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qssm"):
                wrong += [f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}"
                          for a in node.names if a.name.startswith("_")]
    assert not wrong, "\n".join(wrong)


def test_the_product_never_imports_bench():
    wrong = []
    for path in _sources(*PRODUCT):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            wrong += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.split(".")[0] == "bench"]
    assert not wrong, wrong
