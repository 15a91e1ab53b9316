"""The layout rules of DESIGN §3–6 and issue 20, checked on the source: no class over ~600
lines and no function over ~120, no import circle, only the entry scripts import the demo,
no literal Binance error code in the daemon's modules; the packages and their layers (the
live side never loads the simulator, the local exchange or numpy)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("live", "sim", "market", "localex", "research", "ops")
# Modules by dotted name: the root's files (the user's and one per command) and the packages'.
MODULES = {p.stem: p for p in sorted(ROOT.glob("*.py"))}
MODULES.update({f"{pkg}.{p.stem}": p for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("*.py"))
                if p.stem != "__init__"})
MAX_CLASS_LINES = 600
MAX_FUNCTION_LINES = 120
DAEMON_MODULES = ("live.daemon", "live.reconciler", "live.launcher", "binance_library", "grid_strategy",
                  "grid_ladder")
# What stays at the root (issue 20): the user's files, one file per command, what the strategy
# stands on.  Anything else belongs in a package.
ROOT_MODULES = {"trade", "trade_btc", "trade_eth", "config", "grid_strategy", "grid_ladder", "exchange_api",
                "messages", "state_manager", "binance_library", "backtest", "optimize", "download",
                "local_exchange", "dashboard", "status", "paths", "errors"}


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name]))


def _local_imports(name: str) -> set[str]:
    """The project's modules `name` imports, by dotted name (`from sim import model` → sim.model)."""
    out: set[str] = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
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
    importers = {name for name in MODULES if "live.demo" in _local_imports(name)}
    assert importers == {"trade", "trade_btc", "trade_eth"}
    assert "live.demo" not in _local_imports("live.daemon") and "live.demo" not in _local_imports("live.launcher")


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


def test_the_root_holds_the_users_files_and_the_commands_only():
    assert {p.stem for p in ROOT.glob("*.py")} == ROOT_MODULES
    for pkg in PACKAGES:
        doc = ast.get_docstring(ast.parse((ROOT / pkg / "__init__.py").read_text(encoding="utf-8")))
        assert doc, f"{pkg}/__init__.py says what the package is for"


def test_the_live_side_loads_no_simulator_no_local_exchange_and_no_numpy():
    """Importing the daemon (and everything a live start imports) loads no sim / localex /
    research module and not numpy: the simulator cannot leak into the live path."""
    code = ("import sys; import live.daemon, live.launcher, live.preflight, binance_library; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sim', 'localex', 'research', 'numpy') "
            "or m in ('local_exchange', 'backtest', 'optimize')); print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""


def test_the_layers_show_in_the_imports():
    """live never imports sim / localex / research (the demo embeds the local exchange, and
    only the entry scripts import it); sim never imports localex or live; Binance's decoders
    are the live side's (binance_library), its encoders the local exchange's (localex.wire)."""
    wrong: list[str] = []
    for name in MODULES:
        deps = _local_imports(name)
        top = name.split(".")[0]
        if top == "live" and name != "live.demo":
            wrong += [f"{name} → {d}" for d in deps if d.split(".")[0] in ("sim", "localex", "research")
                      or d in ("local_exchange", "backtest", "optimize")]
        if top == "sim":
            wrong += [f"{name} → {d}" for d in deps if d.split(".")[0] in ("localex", "live", "research")]
        if top in ("ops", "market"):
            wrong += [f"{name} → {d}" for d in deps if d.split(".")[0] in ("sim", "localex", "live")]
    assert not wrong, wrong
    assert "localex.wire" not in _local_imports("binance_library")
    decoders = [n.name for n in ast.walk(_tree("localex.wire")) if isinstance(n, ast.FunctionDef)
                and "from_binance" in n.name]
    assert decoders == [], decoders


CONTROL_FLOW = {"localex.base.Reply"}      # raised to answer a request, caught by the gateway


def test_every_error_the_project_raises_is_in_the_one_hierarchy():
    """issue 20: one exception hierarchy (temporary / rate-limited / rejected / fatal) so callers
    catch by meaning.  Every exception class the project defines derives from errors.GridError,
    except the local exchange's control flow (an HTTP reply on its way out of a handler)."""
    import importlib
    import errors
    outside = []
    for name in MODULES:
        for node in ast.walk(_tree(name)):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") \
                    and f"{name}.{node.name}" not in CONTROL_FLOW:
                cls = getattr(importlib.import_module(name), node.name, None)
                if isinstance(cls, type) and issubclass(cls, BaseException) \
                        and not issubclass(cls, errors.GridError):
                    outside.append(f"{name}.{node.name}")
    assert not outside, f"exceptions outside errors.GridError: {outside}"
    assert issubclass(errors.RateLimited, errors.Temporary) and issubclass(errors.BadInput, errors.Fatal)
    assert not issubclass(errors.ExchangeError, (errors.Temporary, errors.Fatal))


def test_the_daemon_catches_no_bare_runtime_error():
    """A failure the daemon waits out is a Temporary, not a RuntimeError caught by type."""
    for name in DAEMON_MODULES + ("exchange_api",):
        for node in ast.walk(_tree(name)):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = {n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)}
                assert "RuntimeError" not in names, f"{name}:{node.lineno} catches RuntimeError"


ENUM_TEXTS = {"BUY", "SELL", "NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "TRADE", "CALCULATED",
              "TP", "BE", "SL", "ENTRY"}       # not "E": the ids' tag, and every event's time field


def test_roles_sides_and_statuses_are_named_once():
    """issue 20: one name for each fact — a side, an order status, an execution type or a role is
    written as its enum member (exchange_api), never as a bare literal elsewhere; an entry's role
    is made by entry_role / fill_role only."""
    found = []
    for name in MODULES:
        if name == "exchange_api":
            continue
        for node in ast.walk(_tree(name)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in ENUM_TEXTS:
                found.append(f"{name}:{node.lineno} {node.value!r}")
            elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant) \
                    and str(node.values[0].value).startswith("ENTRY"):
                found.append(f"{name}:{node.lineno} f'ENTRY…'")
    assert not found, found


def test_wide_records_are_built_by_keyword_outside_the_simulator():
    """OrderUpdate (22 fields) and FillRecord (13) by keyword; positional only in sim/, where a
    backtest builds one per event (each such call carries a comment saying so)."""
    positional = []
    for name in MODULES:
        if name.startswith("sim."):
            continue
        for node in ast.walk(_tree(name)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("OrderUpdate", "FillRecord") and node.args:
                positional.append(f"{name}:{node.lineno} {node.func.id}")
    assert not positional, positional


def test_eps_and_the_root_are_defined_once():
    """EPS lives in exchange_api, the project root in paths.py: nowhere else."""
    for name in MODULES:
        for node in _tree(name).body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("EPS", "ROOT")
                                                    for t in node.targets):
                assert name in ("exchange_api", "paths"), f"{name}:{node.lineno} defines its own EPS / ROOT"
