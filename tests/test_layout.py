"""The package layout: imports run one way (README, "How the code is laid out"), with no cycle.

Read from the source with ``ast`` by ``rsft.tools.sources`` (nothing is imported), so a new module that
imports upward, or an import hidden inside a function to dodge a cycle, fails here with the edge named.
"""

from __future__ import annotations

from rsft.tools.sources import import_graph

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


def test_the_readme_worked_example_runs():
    """README's "How the code is laid out" example rule: its code and config work as printed."""
    import math
    import re

    import torch
    import yaml

    from rsft.acceptance import lm
    from rsft.run.config import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    code = re.search(r"```python\n(class SoftThreshold.*?)```", readme, re.S).group(1)
    config = yaml.safe_load(re.search(r"`conf/acceptance/soft_threshold.yaml`:\n\n```yaml\n(.*?)```", readme, re.S)[1])
    namespace = dict(vars(lm))
    exec(code, namespace)  # in the module it says it goes into
    assert config["_target_"] == "rsft.acceptance.lm.SoftThreshold"
    rule = namespace["SoftThreshold"](**{k: v for k, v in config.items() if k != "_target_"})
    n = 200_000
    reward = config["threshold"] + config["temperature"]  # one temperature above: kept with sigmoid(1)
    kept = rule.accept({"reward": torch.full((n,), reward)}, torch.Generator().manual_seed(0))
    p = 1 / (1 + math.exp(-1))
    # within 5 standard errors (false-failure rate 6e-7)
    assert abs(kept.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
