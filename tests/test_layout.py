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
    # the model core is shared by training and inference: it imports neither, and inference
    # imports nothing from training (the network, its mode and head live in softseg.model)
    later = {"softseg.data": ("training", "inference", "evaluation", "report", "experiments", "cli"),
             "softseg.model": ("training", "inference", "evaluation.evaluate", "report", "experiments", "cli"),
             "softseg.training": ("inference", "evaluation.evaluate", "report", "experiments", "cli"),
             "softseg.inference": ("training", "report", "experiments", "cli"),
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
    folders: list[tuple[int, str]] = []  # (indent, name) of the folders the next line sits in
    for line in tree.splitlines():
        entry = line.strip().split(" ")[0]
        indent = len(line) - len(line.lstrip())
        if not line.startswith("  ") or not entry.endswith(("/", ".py")):
            continue
        folders = [(i, name) for i, name in folders if i < indent]  # a subfolder is indented deeper
        if entry.endswith("/"):
            folders.append((indent, entry.rstrip("/")))
        else:
            rooms.setdefault("/".join(name for _, name in folders), set()).add(entry)
    for path in MODULES.values():
        relative = path.relative_to(PACKAGE)
        if relative.name == "__init__.py" and len(ast.parse(path.read_text()).body) == 1:
            continue  # a room's docstring only: the room's own line describes it
        where = "/".join(relative.parts[:-1])  # its room, and subfolder within it
        assert relative.name in rooms.get(where, set()), f"docs/architecture.md does not list {relative}"


# The benchmarks (benchmarks/*.py; benchmarks/_*.py are their helpers) follow the package's
# loading and exception rules, and each has a --quick form that .ci/run runs after the tests.
ROOT = PACKAGE.parents[1]
BENCHMARK_FILES = sorted((ROOT / "benchmarks").glob("*.py"))
BENCHMARKS = [p for p in BENCHMARK_FILES if not p.name.startswith("_")]


def _unsafe_loads_and_broad_excepts(tree: ast.AST) -> list[str]:
    """``torch.load`` calls without ``weights_only=True`` and handlers of ``Exception``,
    ``BaseException`` or everything, as ``line: what``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
            value = {k.arg: k.value for k in node.keywords}.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and node.module == "torch" and any(
                alias.name == "load" for alias in node.names):
            found.append(f"{node.lineno}: from torch import load (call torch.load(..., weights_only=True))")
        elif isinstance(node, ast.ExceptHandler) and (
                node.type is None or ast.unparse(node.type) in ("Exception", "BaseException")):
            found.append(f"{node.lineno}: except {ast.unparse(node.type) if node.type else ''}".rstrip())
    return sorted(found, key=lambda problem: int(problem.split(":")[0]))


def _has_quick_option(tree: ast.AST) -> bool:
    """Whether a script adds a ``--quick`` command-line option and runs when executed."""
    adds = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument"
               and any(isinstance(a, ast.Constant) and a.value == "--quick" for a in n.args)
               for n in ast.walk(tree))
    runs = any(isinstance(n, ast.If) and ast.unparse(n.test) in ("__name__ == '__main__'", "'__main__' == __name__")
               for n in getattr(tree, "body", []))
    return adds and runs


def test_there_are_benchmarks_to_check():
    assert {"metrics_speed.py", "predict_speed.py", "train_throughput.py"} <= {p.name for p in BENCHMARKS}


@pytest.mark.parametrize("path", BENCHMARK_FILES, ids=lambda p: p.name)
def test_benchmarks_load_weights_only_and_catch_narrowly(path):
    problems = _unsafe_loads_and_broad_excepts(ast.parse(path.read_text()))
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_every_benchmark_has_a_quick_form(path):
    assert _has_quick_option(ast.parse(path.read_text())), (
        f"{path.name}: .ci/run runs `python {path.relative_to(ROOT)} --quick`; add that option "
        f"(tiny sizes, one repeat, the same ratio lines) and an `if __name__ == \"__main__\":` block")


def test_the_benchmark_checks_find_what_they_look_for():
    bad = ast.parse("import torch\ntry:\n    torch.load(p, weights_only=False)\n    torch.load(p)\n"
                    "except Exception:\n    pass\ntry:\n    pass\nexcept:\n    pass\n")
    assert [line.split(":")[0] for line in _unsafe_loads_and_broad_excepts(bad)] == ["3", "4", "5", "9"]
    good = ast.parse("import torch\ntry:\n    torch.load(p, map_location=f(x), weights_only=True)\n"
                     "except (OSError, ValueError):\n    pass\n")
    assert _unsafe_loads_and_broad_excepts(good) == []
    script = "import argparse\np = argparse.ArgumentParser()\np.add_argument({flag!r}, action='store_true')\n"
    main = "if __name__ == '__main__':\n    p.parse_args()\n"
    assert _has_quick_option(ast.parse(script.format(flag="--quick") + main))
    assert not _has_quick_option(ast.parse(script.format(flag="--fast") + main))
    assert not _has_quick_option(ast.parse(script.format(flag="--quick")))


def test_ci_runs_the_readme_test_command_then_every_benchmark_quick():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0].startswith("# 1.") and block[2].startswith("# 2."), "README's set-up commands come first"
    test_command = block[3]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci, ".ci/run must run README's set-up command 2 verbatim"
    after = "\n".join(ci[ci.index(test_command) + 1:])
    assert re.search(r"for (\w+) in benchmarks/\*\.py\b.*?python \"\$\1\" --quick", after, re.S), (
        ".ci/run must run every benchmarks/*.py with --quick after the tests")
