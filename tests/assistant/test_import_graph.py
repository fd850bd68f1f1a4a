"""The package's import graph: acyclic, and the core knows no wire.

Every import counts, also those under `if TYPE_CHECKING:` and inside functions: a cycle that only
type checkers see is still two modules that cannot be understood one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "assistant"
WIRE_MODULES = ("assistant.dialects", "assistant.server", "assistant.cli", "assistant.chat", "assistant.web", "assistant.testing")
"""The wire side: dialects, the ASGI server, the clients, and the testing kit (which starts servers and
connects clients). Everything else in the package is the core."""
WIRE_LIBRARIES = ("websockets", "starlette", "uvicorn", "wyoming", "httpx")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports: package modules by full name, others by top-level name."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:  # `from assistant import events` imports a module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return {m if m.startswith("assistant") else m.split(".")[0] for m in found}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: {m for m in imports(name, path, known) if m in known or not m.startswith("assistant")} for name, path in found.items()}


def is_wire(name: str) -> bool:
    return any(name == w or name.startswith(w + ".") for w in WIRE_MODULES)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return out


def test_the_package_has_no_import_cycle():
    """No two modules of assistant/ import each other, directly or through others (package __init__ files aside)."""
    edges = {name: {m for m in deps if m != "assistant"} for name, deps in graph().items() if name != "assistant"}
    assert cycles(edges) == []


def test_the_core_imports_no_dialect_and_no_wire_library():
    """No core module imports assistant.dialects, the server, a client, or a wire library such as websockets."""
    offenders = {
        name: sorted(m for m in deps if is_wire(m) or m in WIRE_LIBRARIES)
        for name, deps in graph().items() if not is_wire(name)
    }
    assert {name: deps for name, deps in offenders.items() if deps} == {}


def test_the_cycle_finder_finds_a_cycle():
    """The checker itself: a three-module loop is reported, a chain is not."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
