"""The package's layers: imports point downward only, and no package imports itself in a circle.

Read from the source with `ast` (nothing is imported). Module-level imports count; an import inside a
function is a deliberate late binding and is left out.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "excite"

# each layer may import only from the layers listed after it (the README's layout table, top to bottom
# reversed); a name missing here is a new top-level part that needs a place in this table
LAYERS = {
    "errors": set(),
    "_home": set(),  # $EXCITE_HOME: where downloads (io) and compiled kernels (kernels) are cached
    "kernels": {"errors", "_home"},
    "dtypes": {"errors"},
    "random": {"errors", "dtypes"},
    # the engine's two halves know each other, as in torch: a Function returns Tensors, and
    # Tensor.backward runs the engine (autograd/engine.py binds Tensor at its end)
    "autograd": {"kernels", "errors", "dtypes", "tensor"},
    "tensor": {"autograd", "kernels", "errors", "dtypes", "random"},
    "creation": {"tensor", "autograd", "kernels", "errors", "dtypes", "random"},
}
LOWER = {"kernels", "errors", "_home", "dtypes", "random", "autograd", "tensor", "creation"}
LAYERS.update({
    # modules are plain: they reach kernels only through autograd Functions (no call-time fast paths)
    "nn": LOWER - {"kernels"},
    "io": LOWER,
    "optim": LOWER | {"nn"},
    "data": LOWER,
    "graph": LOWER | {"nn"},
    "onnx": LOWER | {"nn", "graph", "io"},
    "vision": LOWER | {"nn", "graph", "io", "data"},
})


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield parts, path


MODULES = {parts for parts, _ in _modules()}


def _top_level_imports(parts, path):
    """The excite modules (as tuples of names below ``excite``) that ``path`` imports at module level."""
    package = parts if path.name == "__init__.py" else parts[:-1]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + (tuple(node.module.split(".")) if node.module else ())
            elif node.module and node.module.split(".")[0] == "excite":
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            for alias in node.names:  # `from . import functional` imports a module, else a name of ``target``
                found.add(target + (alias.name,) if target + (alias.name,) in MODULES else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "excite":
                    found.add(tuple(alias.name.split(".")[1:]))
    return {t for t in found if t in MODULES and t != parts}


GRAPH = {parts: _top_level_imports(parts, path) for parts, path in _modules()}


def _cycle(nodes):
    """A list of modules forming an import cycle among ``nodes``, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for target in sorted(GRAPH[node]):
            if target not in nodes:
                continue
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target, stack)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(nodes):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


@pytest.mark.parametrize("package", ["nn", "kernels", "autograd", "graph", "io", "vision", "onnx", "app"])
def test_no_import_cycle_inside_package(package):
    # a package's __init__ importing its own modules is not a cycle; a module importing the package back is
    members = {p for p in GRAPH if p[:1] == (package,) and len(p) > 1}
    cycle = _cycle(members)
    assert cycle is None, "import cycle: " + " -> ".join(".".join(p) for p in cycle)


def test_imports_point_downward():
    wrong = []
    for parts, targets in GRAPH.items():
        if not parts or parts[0] not in LAYERS:
            continue
        for target in targets:
            if target and target[0] != parts[0] and target[0] not in LAYERS[parts[0]]:
                wrong.append(f"excite.{'.'.join(parts)} imports excite.{'.'.join(target)}")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_library_never_imports_torch():
    importers = [".".join(p) for p, path in _modules()
                 if any((isinstance(n, ast.Import) and any(a.name.split(".")[0] == "torch" for a in n.names))
                        or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "torch")
                        for n in ast.walk(ast.parse(path.read_text())))]
    # the benchmark's torch peer is benchmarks/torch_peer.py, outside the package
    assert importers == []
