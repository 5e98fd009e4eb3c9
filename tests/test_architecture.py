"""The shape of the harness: its rooms import each other without cycles, the pytest plugin
costs nothing until a bench suite runs, and methods use only the public harness API.

Import edges are the imports a module runs when it is imported: its top-level ``import``
statements (including those under a top-level ``try``/``if``), not those inside functions
(late binding, run only when called) nor under ``if TYPE_CHECKING:``. A *room* is a
subpackage of ``bench`` (``bench.data``, ``bench.gate``, ...) or one of the foundation
modules beside them (``bench.errors``, ``bench.registry``, ``bench.env``, ``bench.cache``,
``bench.measure``).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bench

ROOT = Path(__file__).resolve().parent.parent
FOUNDATION = {"bench.errors", "bench.registry", "bench.env", "bench.cache", "bench.measure"}


def bench_modules() -> dict[str, Path]:
    """Every module of the ``bench`` package: dotted name -> file."""
    out = {"bench": Path(bench.__file__)}
    for info in pkgutil.walk_packages(bench.__path__, "bench."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None
        out[info.name] = Path(spec.origin)
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_time_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import ``path`` runs at import time (see the module docstring)."""
    found: list[tuple[str, list[str]]] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.extend((a.name, []) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(ast.parse(path.read_text()).body)
    return found


def module_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Import-time edges between bench modules (``from bench.x import y`` with ``y`` a module
    points at ``bench.x.y``)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names in import_time_imports(path):
            if target != "bench" and not target.startswith("bench."):
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            graph[name].update(subs or ([target] if target in modules else []))
            if subs and len(subs) < len(names) and target in modules:
                graph[name].add(target)
        graph[name].discard(name)
    return graph


def room(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else name


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if state.get(nxt) is None and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (cycle := dfs(node)):
            return cycle
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("name", sorted(bench_modules()))
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_no_import_cycle_between_modules() -> None:
    cycle = find_cycle(module_graph(bench_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_rooms() -> None:
    modules = bench_modules()
    rooms: dict[str, set[str]] = {}
    for name, targets in module_graph(modules).items():
        if name == "bench":
            continue  # the lazy public-API facade imports nothing at import time
        rooms.setdefault(room(name), set()).update(room(t) for t in targets if room(t) != room(name))
    cycle = find_cycle(rooms)
    assert cycle is None, "rooms import each other in a cycle: " + " -> ".join(cycle or [])


LAYERS = (
    "bench.errors",
    "bench.registry",
    "bench.env",
    "bench.measure",
    "bench.contract",
    "bench.cache",
    "bench.data",
    "bench.models",
    "bench.engine",
    "bench.execute",
    "bench.results",
    "bench.gate",
    "bench.serve",
    "bench.cli",
)
"""The rooms from the bottom up (README.md, "Layout"): at import time a room imports only rooms before it."""


def test_rooms_import_only_rooms_below_them() -> None:
    order = {name: i for i, name in enumerate(LAYERS)}
    for name, targets in module_graph(bench_modules()).items():
        if name == "bench":
            continue
        for target in targets:
            if room(target) != room(name):
                assert order[room(target)] < order[room(name)], (
                    f"{name} imports {target}: {room(name)} may import only {LAYERS[: order[room(name)]]}"
                )


def test_rooms_are_the_documented_ones() -> None:
    rooms = {room(n) for n in bench_modules() if n != "bench"}
    packages = {"bench." + p.name for p in (ROOT / "bench").iterdir() if (p / "__init__.py").exists()}
    assert rooms == packages | FOUNDATION, f"unexpected top-level modules: {sorted(rooms - packages - FOUNDATION)}"
    assert set(LAYERS) == rooms


def test_contract_imports_no_engine_data_or_store() -> None:
    """The contract is the bottom of the harness: a method's vocabulary, nothing that runs."""
    graph = module_graph(bench_modules())
    for name, targets in graph.items():
        if room(name) == "bench.contract":
            bad = {t for t in targets if room(t) not in {"bench.contract", "bench.errors", "bench.measure"}}
            assert not bad, f"{name} imports {sorted(bad)}"


def _imports_after(code: str) -> set[str]:
    probe = f"import sys\nbefore = set(sys.modules)\n{code}\nprint('\\n'.join(sorted(set(sys.modules) - before)))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(proc.stdout.split())


def test_plugin_import_loads_no_torch() -> None:
    """pytest loads the plugin in every run of the environment; only a bench suite may pay for torch."""
    loaded = _imports_after("import bench.execute.plugin")
    heavy = {
        m
        for m in loaded
        if m.split(".")[0]
        in {"torch", "numpy", "pandas", "sqlite_utils", "scipy", "torchvision", "datasette", "methods"}
    }
    assert not heavy, f"importing the plugin loads {sorted(heavy)[:8]}"


def test_bench_and_its_settings_load_no_torch() -> None:
    loaded = _imports_after("import bench, bench.execute.grid, bench.contract.settings, bench.cli")
    assert not {m for m in loaded if m.split(".")[0] == "torch"}


# -- methods use the public harness API ---------------------------------------------------------


def method_files() -> list[Path]:
    return sorted((ROOT / "methods").rglob("*.py"))


def private_uses(path: Path) -> list[str]:
    """Private bench names ``path`` imports or reaches, wall-clock reads (``time.perf_counter``) and
    a ``Stopwatch()`` without a device (it would not synchronise CUDA)."""
    tree = ast.parse(path.read_text())
    bad: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and not node.args and not node.keywords:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name == "Stopwatch":
                bad.append(f"line {node.lineno}: Stopwatch() without a device (pass it: it synchronises CUDA)")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bench":
            if any(part.startswith("_") for part in node.module.split(".")):
                bad.append(f"line {node.lineno}: from {node.module}")
            bad.extend(f"line {node.lineno}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_"))
        elif isinstance(node, ast.Import):
            bad.extend(
                f"line {node.lineno}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] == "bench" and any(p.startswith("_") for p in a.name.split("."))
            )
        elif isinstance(node, ast.Attribute):
            chain, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name):
                dotted = [inner.id, *reversed(chain)]
                if dotted[:2] in (
                    ["time", "perf_counter"],
                    ["time", "perf_counter_ns"],
                    ["time", "time"],
                    ["time", "monotonic"],
                ):
                    bad.append(f"line {node.lineno}: {'.'.join(dotted)} (use bench.measure.Stopwatch)")
                if dotted[-1] in {"reset_peak_memory_stats", "max_memory_allocated", "max_memory_reserved"}:
                    bad.append(f"line {node.lineno}: {'.'.join(dotted)} (use bench.measure.MemoryMeter: it nests)")
                if dotted[-1] in {"series", "timers"} and dotted[-2] == "rec":
                    bad.append(f"line {node.lineno}: {'.'.join(dotted)} (use rec.curve(name))")
                if dotted[0] in {"bench", "engine"} and any(
                    p.startswith("_") and not p.startswith("__") for p in dotted[1:]
                ):
                    bad.append(f"line {node.lineno}: {'.'.join(dotted)}")
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            bad.extend(
                f"line {node.lineno}: from time import {a.name}"
                for a in node.names
                if a.name in {"perf_counter", "perf_counter_ns", "time", "monotonic"}
            )
    return bad


def test_private_use_checker_catches_each_form(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "import time\nfrom bench.execute.runner import _resolve\nfrom bench.models._x import y\n"
        "import bench.data.registry\nt = time.perf_counter()\nbench.data.registry._LOADERS\n"
        "from time import perf_counter\nrec.series['x']\ntorch.cuda.reset_peak_memory_stats(d)\n"
        "w = Stopwatch().start()\nw = measure.Stopwatch()\nw = Stopwatch(device)\n"
    )
    found = private_uses(src)
    assert len(found) == 9, found


@pytest.mark.parametrize("path", method_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_methods_use_public_harness_api(path: Path) -> None:
    assert private_uses(path) == []


METHOD_API = {
    "bench.engine",
    "bench.errors",
    "bench.registry",
    "bench.cache",
    "bench.measure",
    "bench.contract",
    "bench.data",
    "bench.models",
    "bench.results.analysis",
    "bench.results.claims",
}
"""What a method may import: the contract, engine, meters, data, models, the public cache helper,
the registries, and the statistics and claim checks it registers. Not the executors, the store,
the gate, the server or the command line."""


@pytest.mark.parametrize("path", method_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_methods_import_only_the_method_api(path: Path) -> None:
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "bench":
            modules = [f"bench.{a.name}" for a in node.names]  # from bench import engine
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        for module in modules:
            if module.split(".")[0] == "bench" and not any(
                module == allowed or module.startswith(allowed + ".") for allowed in METHOD_API
            ):
                bad.append(f"line {node.lineno}: {module}")
    assert bad == [], "methods may import only " + ", ".join(sorted(METHOD_API))


# -- one exception family -------------------------------------------------------------------------


def test_every_harness_exception_lives_in_errors_and_is_a_bench_error() -> None:
    from bench.errors import BenchError

    found = []
    for name in bench_modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__.startswith("bench"):
                found.append(obj)
                assert obj.__module__ == "bench.errors", f"{obj.__qualname__} is defined in {obj.__module__}"
                assert issubclass(obj, BenchError), f"{obj.__qualname__} is not a BenchError"
    assert len(set(found)) >= 19


# -- SQL in one place ------------------------------------------------------------------------------

SQL_MODULES = {"bench.results.schema", "bench.results.store", "bench.results.queries"}
SQL_START = re.compile(
    r"^\s*(SELECT\s.*\bFROM\b|INSERT\s+INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b|CREATE\s+(TABLE|VIEW|INDEX)\b"
    r"|PRAGMA\s+\w+|VACUUM\b|WITH\s+\w+\s+AS\s*\()",
    re.I | re.S,
)


def sql_literals(path: Path) -> list[str]:
    """String literals (f-string parts included) of ``path`` that start like an SQL statement;
    docstrings are prose and do not count."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
        if isinstance(node, ast.JoinedStr):
            docstrings.update(id(v) for v in node.values)  # f-string parts: judged with their f-string
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if SQL_START.match(node.value):
                found.append(f"line {node.lineno}: {node.value[:60]!r}")
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.Constant) and isinstance(head.value, str) and SQL_START.match(head.value):
                found.append(f"line {node.lineno}: f{head.value[:60]!r}")
    return found


def test_sql_literal_finder_sees_plain_and_f_strings(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text('"""SELECT in a docstring is prose."""\nA = "select * from runs"\nB = f"UPDATE runs SET x = {1}"\n')
    assert len(sql_literals(src)) == 2


@pytest.mark.parametrize("name", sorted(set(bench_modules()) - SQL_MODULES))
def test_sql_is_written_only_in_the_results_store(name: str) -> None:
    """SQL text lives in results/schema (DDL, views), results/store (writes) and results/queries (reads)."""
    assert sql_literals(bench_modules()[name]) == []


# -- one meter, one timer ----------------------------------------------------------------------------

PEAK_COUNTERS = ("reset_peak_memory_stats", "clear_refs", "VmHWM")
"""What resets or reads the peak-memory counters: only ``bench.measure`` may (its meters nest)."""


def test_only_the_harness_touches_the_peak_memory_counters() -> None:
    """Resetting the CUDA allocator's peak or the kernel's VmHWM (through /proc/self/clear_refs)
    hides the peak from every meter already open; ``bench.measure.MemoryMeter`` nests, so code
    outside ``bench/`` (methods, suites, benchmarks, tests) meters through it instead."""
    here = Path(__file__).resolve()
    bad = [
        f"{path.relative_to(ROOT)}: {word}"
        for top in ("methods", "suites", "benchmarks", "tests")
        for path in sorted((ROOT / top).rglob("*.py"))
        if path != here
        for word in PEAK_COUNTERS
        if word in path.read_text()
    ]
    assert bad == [], "meter through bench.measure.MemoryMeter instead: " + "; ".join(bad)


def test_no_method_times_itself() -> None:
    """No wall-clock read anywhere in methods/ (stages: ``rec.stage``/``Stopwatch``; steps: the engine)."""
    bad = [
        str(path.relative_to(ROOT)) for path in method_files() if re.search(r"\bperf_counter(_ns)?\b", path.read_text())
    ]
    assert bad == []


def test_step_time_tables_use_the_engines_step() -> None:
    """NASOA's step-time tables time ``engine.time_steps`` (fit's own step), never a loop of their own."""
    path = ROOT / "methods" / "nasoa" / "steptime.py"
    tree = ast.parse(path.read_text())
    optim = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "optim"
        or (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch.optim"))
    ]
    assert optim == [], f"methods/nasoa/steptime.py builds an optimiser itself (lines {optim})"
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
        if node.func.value.id == "engine"
    }
    assert "time_steps" in calls and "backward" not in path.read_text()
