"""Imports point one way (DESIGN.md section 2): leaves import nothing above them; rewards/tasks never import torch."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "grpolab"

# module (or package) -> grpolab modules it may import
ALLOWED = {
    "errors": set(),
    "recipes": set(),
    "validation": {"errors", "recipes"},
    "config": {"errors", "recipes", "validation"},
    "algo": set(),
    "tasks": {"errors", "tasks"},
    "rewards": {"errors", "rewards", "tasks"},
    "indicators": {"rewards"},
    "curriculum": {"errors", "tasks", "calibrate"},
    "runtime": {"errors"},
}
NO_TORCH = {"errors", "recipes", "config", "validation", "tasks", "rewards", "indicators"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    return rel.parts[0]


def test_leaves_import_only_what_they_may():
    bad = []
    for path in SRC.rglob("*.py"):
        unit = _unit(path)
        if unit not in ALLOWED:
            continue
        for name in _imports(path):
            if name.startswith("grpolab."):
                target = name.split(".")[1]
                if target not in ALLOWED[unit]:
                    bad.append(f"{path.relative_to(SRC)} imports {name}")
            if unit in NO_TORCH and (name == "torch" or name.startswith("torch.")):
                bad.append(f"{path.relative_to(SRC)} imports torch")
    assert not bad, bad


def test_nothing_imports_the_cli_or_the_trainer_upwards():
    bad = []
    for path in SRC.rglob("*.py"):
        unit = _unit(path)
        for name in _imports(path):
            if name in ("grpolab.cli",) and unit not in ("__main__",):
                bad.append(f"{path.relative_to(SRC)} imports the CLI")
            if name == "grpolab.trainer" and unit not in ("cli", "__init__"):
                bad.append(f"{path.relative_to(SRC)} imports the trainer")
    assert not bad, bad


def test_importing_grpolab_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, grpolab, grpolab.rewards, grpolab.tasks, grpolab.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
