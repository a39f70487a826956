"""The house's rules that code can check: no import circles between nbserve's rooms, nor
between the panel's TypeScript modules (labextension/src).

A circle means two rooms cannot be read (or changed) one without the other. Imports under
``if TYPE_CHECKING:`` are type hints only and do not count; deferred imports inside
functions do, since they run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nbserve"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return hidden


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        hidden = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rpartition(".")[0]
                target = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    graph[name].add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                graph[name] |= {alias.name for alias in node.names}
        graph[name] = {t for t in graph[name] if t in modules and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "nbserve._connection" in import_graph()["nbserve._api"], "it reads relative imports"


def test_no_import_circles_between_rooms():
    graph = import_graph()
    found = circles(graph)
    described = ["; ".join(f"{m} -> {', '.join(sorted(graph[m] & set(group)))}" for m in group) for group in found]
    assert not found, "import circles:\n" + "\n".join(described)


def _written_kinds() -> set[str]:
    """Every event kind the agent's code writes: add_event's first argument (literals, both sides
    of a conditional, f-strings for each rollout mode) and every ``kind="..."`` handed on."""
    kinds: set[str] = set()

    def take(node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            kinds.add(node.value)
        elif isinstance(node, ast.IfExp):
            take(node.body)
            take(node.orelse)
        elif isinstance(node, ast.JoinedStr):  # f"{mode}_started": a rollout mode, then a literal
            tail = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            kinds.update(f"{mode}{tail}" for mode in ("canary", "shadow"))

    for path in (PACKAGE / "_agent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                if getattr(node.func, "attr", None) == "add_event" and node.args:
                    take(node.args[0])
                for keyword in node.keywords:
                    if keyword.arg == "kind":
                        take(keyword.value)
            elif isinstance(node, ast.arguments):  # defaults such as kind: str = "aborted"
                names = [a.arg for a in node.args[-len(node.defaults):]] if node.defaults else []
                for name, default in zip(names, node.defaults):
                    if name == "kind":
                        take(default)
                for arg, default in zip(node.kwonlyargs, node.kw_defaults):
                    if arg.arg == "kind" and default is not None:
                        take(default)
    return kinds


def test_every_event_the_agent_writes_is_one_spelling_in_the_events_room():
    from nbserve._events import AUDITED, Event

    written = _written_kinds()
    assert {"gate_breached", "aborted", "canary_started", "shadow_resumed", "alias_removed"} <= written
    unknown = written - {e.value for e in Event}
    assert not unknown, f"add these to nbserve._events.Event: {sorted(unknown)}"
    assert AUDITED <= set(Event)


PANEL = PACKAGE.parent / "labextension" / "src"
# `import {a, b} from './x'`, `import './x'`, `export {a} from './x'`: what runs when the module
# loads. `import type` is erased by the compiler and does not count.
_TS_IMPORT = re.compile(r"^(?:import|export)\s+(type\s+)?(?:[^;'\"]*?\sfrom\s+)?'\./([\w.-]+)'", re.M)


def panel_import_graph(folder: Path = PANEL) -> dict[str, set[str]]:
    """The panel's modules (``labextension/src/*.ts``) and the ones each imports for its values."""
    graph: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.ts")):
        graph[path.stem] = {target.removesuffix(".js") for type_only, target in
                            _TS_IMPORT.findall(path.read_text()) if not type_only}
    return {name: targets & set(graph) - {name} for name, targets in graph.items()}


def test_the_panel_checker_reads_typescript_imports(tmp_path):
    (tmp_path / "a.ts").write_text("import { b } from './b';\nimport type { C } from './c';\n")
    (tmp_path / "b.ts").write_text("import {\n  x,\n  y\n} from './c';\nexport { z } from './a';\n")
    (tmp_path / "c.ts").write_text("import type { A } from './a';\nimport './b';\n")
    assert panel_import_graph(tmp_path) == {"a": {"b"}, "b": {"a", "c"}, "c": {"b"}}
    assert circles(panel_import_graph(tmp_path)) == [["a", "b", "c"]]


def test_no_import_circles_in_the_panel():
    graph = panel_import_graph()
    assert {"api", "actions", "dom", "resources"} <= set(graph) and "api" in graph["model"]
    found = circles(graph)
    described = ["; ".join(f"{m} -> {', '.join(sorted(graph[m] & set(group)))}" for m in group) for group in found]
    assert not found, "import circles in labextension/src:\n" + "\n".join(described)
