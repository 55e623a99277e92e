"""The package's layers, read from its own imports (AST, so imports inside functions count too):
no import cycles, training and export apart, and each layer only importing the ones below."""
import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "effnet_tf")
# What each subpackage may import (besides itself); main.py and notebook_utils.py are on top.
ALLOWED = {
    "keras_internals": set(),  # a module: every use of Keras internals, at the bottom
    "blocks": set(),
    "storage": set(),
    "data": {"storage"},
    "model": {"blocks", "keras_internals"},
    "config": {"model", "storage"},
    "export": {"config", "model", "data", "storage", "keras_internals"},
    "training": {"config", "model", "data", "blocks", "storage", "keras_internals"},
    "run": {"config", "model", "data", "blocks", "storage", "training", "export"},
}


def _modules():
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                yield module.removesuffix(".__init__"), path


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("effnet_tf"):
            yield node.module
            for alias in node.names:  # "from effnet_tf.data import pipeline" imports a module
                yield f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("effnet_tf"))


def _graph(packages=True):
    """module -> the effnet_tf modules it imports; ``packages=False`` drops edges into package
    ``__init__`` files (they re-export their own modules, which is no dependency cycle)."""
    modules = dict(_modules())
    inits = {m for m, p in modules.items() if p.endswith("__init__.py")}
    return {m: {i for i in _imports(p) if i in modules and i != m and (packages or i not in inits)}
            for m, p in modules.items()}


def _layer(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def test_every_subpackage_imports_only_the_layers_below_it():
    wrong = []
    for module, imported in _graph().items():
        layer = _layer(module)
        if layer is None:
            continue
        for target in imported:
            other = _layer(target)
            if other not in (None, layer) and other not in ALLOWED[layer]:
                wrong.append(f"{module} -> {target}")
            if other is None and target != "effnet_tf":
                wrong.append(f"{module} -> {target} (top level)")
    assert not wrong, "imports that run up or across the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles_between_modules():
    graph = _graph(packages=False)
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.slow  # a fresh interpreter per case
@pytest.mark.parametrize("module, forbidden", [
    ("effnet_tf.export", "effnet_tf.training"),
    ("effnet_tf.export.bundle", "effnet_tf.training"),
    ("effnet_tf.training.loop", "effnet_tf.export"),
    ("effnet_tf.training.loop", "effnet_tf.run"),
    ("effnet_tf.run.predict", "effnet_tf.training"),
])
def test_importing_one_layer_does_not_load_another(module, forbidden):
    code = (f"import sys, {module}; loaded = [m for m in sys.modules if m == {forbidden!r} or "
            f"m.startswith({forbidden + '.'!r})]; print(loaded); sys.exit(1 if loaded else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, f"import {module} loaded {result.stdout.strip()} {result.stderr[-500:]}"
