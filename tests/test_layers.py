"""Layers point one way: every import of the project's own modules (those inside functions too) goes down.

    options (seqjepa.options and seqjepa.config, seqjepa.registry: the one registry class, seqjepa.files)
      -> worlds and the policies that collect their data (envs, agents' data policies)
      -> the model and its metrics (seqjepa.method, model, encoder, metrics, baselines)
      -> training (seqjepa.train, data, device, monitor, progress, checkpoint, distributed, bench)
      -> evaluation (eval)
      -> planners that use a trained model (agents.planning, active_vision, plan_eval)
      -> run.py and benchmarks/

The top-level folders stay (``envs``, ``agents``, ``eval``: the README's commands, plug-ins and gym ids use them);
the ``agents`` package holds two layers, its data policies (imported by training) and its planners (which import
evaluation), so layers are assigned per module here, not per package.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("seqjepa", "envs", "agents", "eval")
DATA_POLICIES = {"agents", "agents.base", "agents.random_policy", "agents.saliency", "agents.uniform", "agents.sweep"}
PLANNERS = {"agents.planning", "agents.active_vision", "agents.plan_eval"}
MODEL = {"seqjepa.model", "seqjepa.method", "seqjepa.encoder", "seqjepa.metrics"}
TRAINING = {"seqjepa.train", "seqjepa.data", "seqjepa.device", "seqjepa.monitor", "seqjepa.progress",
            "seqjepa.checkpoint", "seqjepa.distributed", "seqjepa.bench"}
LAYERS = ("options", "worlds", "model", "training", "eval", "planners", "launcher")


def layer(module: str) -> int:
    if module in ("seqjepa", "seqjepa.options", "seqjepa.config", "seqjepa.registry", "seqjepa.files"):
        return 0
    if module.startswith("envs") or module in DATA_POLICIES:
        return 1
    if module in MODEL or module.startswith("seqjepa.baselines"):
        return 2
    if module in TRAINING:
        return 3
    if module.startswith("eval"):
        return 4
    if module in PLANNERS:
        return 5
    return 6


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    out["run"] = ROOT / "run.py"
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """The project modules ``name`` imports, with line numbers: top-level and inside functions alike."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            # ``from pkg import sub`` imports the module pkg.sub where one exists.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        for target in targets:
            if target.split(".")[0] not in PACKAGES:
                continue
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target != name:
                found.append((target, node.lineno))
    return found


def test_every_import_points_down():
    known = modules()
    up = [f"{name}:{line} ({LAYERS[layer(name)]}) imports {target} ({LAYERS[layer(target)]})"
          for name, path in known.items() for target, line in imports(name, path, known)
          if layer(target) > layer(name)]
    assert not up, "imports that point up a layer:\n" + "\n".join(up)


def test_no_import_cycles():
    known = modules()
    graph = {name: {t for t, _ in imports(name, path, known)} for name, path in known.items()}
    # A package's __init__ importing its own submodules is how packages work; a submodule importing its package
    # back (for a name the package re-exports) while the package imports it is the cycle this looks for.
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_layer_rule_sees_an_upward_import(tmp_path):
    """The checker itself: an import from a function body of a lower module is found."""
    known = {"seqjepa.train": tmp_path / "train.py", "eval.probes": tmp_path / "probes.py"}
    known["seqjepa.train"].write_text("def f():\n    from eval.probes import r2_score\n")
    found = imports("seqjepa.train", known["seqjepa.train"], known)
    assert found == [("eval.probes", 2)] and layer("eval.probes") > layer("seqjepa.train")
