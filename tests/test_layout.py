"""The layout rules of DESIGN §3–6, checked on the source (issue 10): no class over ~600
lines and no function over ~120, no import circle, only the entry scripts import the demo,
no literal Binance error code in the daemon's modules."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {p.stem: p for p in sorted(ROOT.glob("*.py"))}
MAX_CLASS_LINES = 600
MAX_FUNCTION_LINES = 120
DAEMON_MODULES = ("daemon", "reconciler", "launcher", "binance_library", "grid_strategy", "grid_ladder")


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name]))


def _local_imports(name: str) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return (out & MODULES.keys()) - {name}


def test_no_class_or_function_too_long():
    long: list[str] = []
    for name in MODULES:
        for node in ast.walk(_tree(name)):
            size = (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "lineno") else 0
            if isinstance(node, ast.ClassDef) and size > MAX_CLASS_LINES:
                long.append(f"{name}.py class {node.name}: {size} lines")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > MAX_FUNCTION_LINES:
                long.append(f"{name}.py def {node.name}: {size} lines")
    assert not long, long


def test_no_import_circle():
    graph = {name: _local_imports(name) for name in MODULES}
    state: dict[str, int] = {}      # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                return path + [name, dep]
            if dep not in state:
                found = visit(dep, path + [name])
                if found:
                    return found
        state[name] = 2
        return None

    for name in MODULES:
        if name not in state:
            circle = visit(name, [])
            assert circle is None, " → ".join(circle)


def test_only_the_entry_scripts_import_the_demo():
    importers = {name for name in MODULES if "demo" in _local_imports(name)}
    assert importers == {"trade", "trade_btc", "trade_eth"}
    assert "demo" not in _local_imports("daemon") and "demo" not in _local_imports("launcher")


def test_no_literal_error_code_in_the_daemon():
    """Binance's codes are exchange_api.BinanceError members there, never bare numbers."""
    found: list[str] = []
    for name in DAEMON_MODULES:
        for node in ast.walk(_tree(name)):
            if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
                    and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, int)
                    and 1000 <= node.operand.value <= 9999):
                found.append(f"{name}.py:{node.lineno}: -{node.operand.value}")
    assert not found, found
