"""The package layout: imports run one way (README, "How the code is laid out"), with no cycle.

Read from the source with ``ast`` (nothing is imported), so a new module that imports upward, or an
import hidden inside a function to dodge a cycle, fails here with the offending edge named.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Layers from the bottom up. A module may import modules of its own layer's package and of lower layers.
LAYERS: list[tuple[str, ...]] = [
    ("rsft.batch", "rsft.distributions", "rsft.targets"),
    ("rsft.metrics", "rsft.run"),
    ("rsft.proposals", "rsft.acceptance", "rsft.models", "rsft.tools"),
    ("rsft.sampling",),
    ("rsft.tasks",),
    ("rsft.data",),
    ("rsft.train",),
]
#: What each package may import besides its own modules (narrower than "anything lower").
ALLOWED = {
    "rsft.models": ("rsft.batch", "rsft.metrics", "rsft.distributions"),
    "rsft.proposals": ("rsft.batch", "rsft.distributions"),
    "rsft.acceptance": ("rsft.batch", "rsft.distributions", "rsft.targets"),
    "rsft.tools": ("rsft.run",),
    "rsft.metrics": ("rsft.batch",),
    "rsft.run": (),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the rsft modules it imports (anywhere in the file, functions included)."""
    modules = {module_name(p): p for p in SRC.joinpath("rsft").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rsft"):
                for alias in node.names:  # `from rsft.tasks import decision_data` imports a module
                    sub = f"{node.module}.{alias.name}"
                    edges.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name.startswith("rsft"))
        graph[name] = {e for e in edges if e != name}
    return graph


def package(module: str) -> str:
    for layer in LAYERS:
        for pkg in layer:
            if module == pkg or module.startswith(pkg + "."):
                return pkg
    return module


def layer_of(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        if package(module) in layer:
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py: add it where it belongs")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None, f"import cycle: {' -> '.join(find_cycle(import_graph()))}"


def test_imports_run_down_the_layers():
    upward = []
    for module, imports in import_graph().items():
        if module == "rsft":  # the public API re-exports from below
            continue
        for target in imports:
            if target == "rsft" or package(target) == package(module):
                continue
            allowed = ALLOWED.get(package(module))
            if layer_of(target) >= layer_of(module) or (allowed is not None and package(target) not in allowed):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the layout (README, 'How the code is laid out'):\n" + "\n".join(sorted(upward))


def test_the_checker_sees_a_cycle_and_an_upward_import():
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert layer_of("rsft.models.flow") < layer_of("rsft.data")
