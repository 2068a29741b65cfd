"""The package's shape, checked on the source: no import cycles (imports inside functions
included), small modules, one atomic writer, safe loading, no broad exception handlers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "softseg"
MODULES = {
    ".".join(("softseg", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): p
    for p in sorted(PACKAGE.rglob("*.py"))
}


def _imports(name: str, path: Path) -> set[str]:
    """Every softseg module that ``name`` imports, at any depth of its code."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_lazy_imports_included():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    # a subpackage's __init__ is imported with any of its modules: count that edge too
    for name in graph:
        parent = name.rpartition(".")[0]
        if parent in graph and parent != "softseg":
            graph[name].add(parent)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_training_does_not_import_inference_and_data_imports_no_later_step():
    later = {"softseg.data": ("training", "inference", "evaluation", "report", "experiments", "cli"),
             "softseg.training": ("inference", "evaluation.evaluate", "report", "experiments", "cli"),
             "softseg.evaluation": ("inference", "report", "experiments", "cli"),
             "softseg.report": ("experiments", "cli")}
    for name, path in MODULES.items():
        for room, banned in later.items():
            if name.startswith(room + ".") or name == room:
                bad = [m for m in _imports(name, path) if any(m.startswith(f"softseg.{b}") for b in banned)]
                assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_are_small(name):
    assert len(MODULES[name].read_text().splitlines()) <= 450, name


def test_one_atomic_writer_safe_loading_no_broad_excepts():
    for name, path in MODULES.items():
        text = path.read_text()
        if name != "softseg.files":
            assert not re.search(r"\b(mkstemp|mkdtemp|os\.replace)\(", text), f"{name} writes files itself"
        assert "except Exception" not in text, name
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{name}: {call}"


def test_user_errors_raised_while_handling_another_chain_it():
    unchained = []
    for name, path in MODULES.items():
        for handler in ast.walk(ast.parse(path.read_text())):
            if isinstance(handler, ast.ExceptHandler):
                unchained += [f"{name}:{n.lineno}" for n in ast.walk(handler)
                              if isinstance(n, ast.Raise) and n.exc is not None and n.cause is None]
    assert not unchained, "raise ... from error (or from None, saying why): " + ", ".join(unchained)


def test_architecture_page_lists_every_module_in_its_room():
    page = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    tree = page.split("```", 2)[1]
    rooms: dict[str, set[str]] = {}
    room = ""
    for line in tree.splitlines():
        entry = line.strip().split(" ")[0]
        if line.startswith("  ") and not line.startswith("    ") and entry.endswith("/"):
            room = entry.rstrip("/")
        elif line.startswith("  ") and entry.endswith(".py"):
            indent = len(line) - len(line.lstrip())
            rooms.setdefault(room if indent > 2 else "", set()).add(entry)
    for path in MODULES.values():
        relative = path.relative_to(PACKAGE)
        if relative.name == "__init__.py" and len(ast.parse(path.read_text()).body) == 1:
            continue  # a room's docstring only: the room's own line describes it
        where = relative.parts[0] if len(relative.parts) > 1 else ""
        assert relative.name in rooms.get(where, set()), f"docs/architecture.md does not list {relative}"
