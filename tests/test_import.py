"""Import hygiene: the package's modules import each other without cycles, each imports on its
own in a fresh interpreter, and importing the package leaves the environment as it was."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ecf_engine"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))


def _run(code: str, env: dict | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _imports(path: Path) -> set[str]:
    """The ecf_engine modules a file imports anywhere (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1 or base.startswith("ecf_engine"):
                base = base.removeprefix("ecf_engine").lstrip(".")
                out |= {base} if base else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("ecf_engine.") for a in node.names if a.name.startswith("ecf_engine.")}
    return {name.split(".")[0] for name in out} & set(MODULES)


def test_no_import_cycles():
    graph = {m: _imports(PACKAGE / f"{m}.py") - {m} for m in MODULES}
    state: dict[str, str] = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            assert state.get(n) != "open", f"import cycle: {' -> '.join(path + [n])}"
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in MODULES:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module):
    assert _run(f"import ecf_engine.{module}; print('ok')").strip() == "ok"


def test_import_leaves_the_environment_unchanged():
    code = """
import json, os
before = dict(os.environ)
import ecf_engine
from ecf_engine import engine, fixedpoint, ops, rans     # the modules that load torch and the C code
import torch
print(json.dumps([before, dict(os.environ)]))
"""
    # a bare environment: this pytest process has imported ecf_engine already, and a variable the
    # import set here would pass to the child unchanged
    bare = {k: os.environ[k] for k in ("PATH", "HOME", "OMP_NUM_THREADS") if k in os.environ}
    before, after = json.loads(_run(code, bare))
    assert after == before
