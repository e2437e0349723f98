"""Imports point down only: the layer order of docs/architecture.md, held in code.

Every module's imports are parsed (module level and inside functions, ``import_module`` calls with
a literal name included). A module may import its own layer and the layers before it; a method
never imports another method; and the module graph has no cycle. The order is written once, here,
with no exceptions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# (layer, the top-level modules or packages under visec that form it), lowest first
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("errors", "utils", "paths", "options", "registry", "config", "cards", "checkpoint", "runtime")),
    ("data", ("data",)),
    ("preprocess", ("preprocess",)),
    ("metrics", ("metrics",)),
    ("models", ("models",)),
    ("attacks", ("attacks",)),
    ("engine", ("engine",)),
    ("federated", ("federated",)),
    ("methods", ("methods", "identity")),
    ("report", ("report",)),
    ("applications", ("apps", "cli", "inference", "__init__")),
)
METHOD_PACKAGES = ("visec.methods",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    """The layer index of a ``visec...`` module name (``visec`` itself is the public facade)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, (_, members) in enumerate(LAYERS):
        if top in members:
            return i
    raise AssertionError(f"{module}: visec.{top} is in no layer; add it to LAYERS in {__file__}")


def imports_of(path: Path) -> set[str]:
    """Every visec module ``path`` imports: ``import x``, ``from x import y`` (y when it is a module),
    at any depth, and ``importlib.import_module("x")``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(str(node.args[0].value))
    return {_existing(m) for m in found if m == "visec" or m.startswith("visec.")}


def _existing(module: str) -> str:
    """The longest prefix of ``module`` that is a module file or package (``from a import f``)."""
    parts = module.split(".")
    while len(parts) > 1:
        base = SRC.joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return "visec"


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): imports_of(p) - {_module_name(p)} for p in sorted(SRC.rglob("*.py"))}


def test_imports_point_down_only():
    bad = []
    for mod, deps in _graph().items():
        if mod == "visec":  # the facade loads its lazy names from every layer
            continue
        for dep in sorted(deps):
            if dep != "visec" and layer_of(dep) > layer_of(mod):
                bad.append(f"{mod} ({LAYERS[layer_of(mod)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def _method_of(module: str) -> str | None:
    for pkg in METHOD_PACKAGES:
        if module.startswith(pkg + "."):
            return module[len(pkg) + 1:].split(".")[0]
    return None


def test_no_method_imports_another_method():
    bad = [f"{mod} imports {dep}" for mod, deps in _graph().items() for dep in sorted(deps)
           if _method_of(mod) and _method_of(dep) and _method_of(mod) != _method_of(dep)]
    assert not bad, "method-to-method imports (move what they share into models/ or metrics/):\n" + "\n".join(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a path that returns to its start), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    # a package's __init__ re-exporting its submodules is not a cycle of the code
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in _graph().items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_is_in_a_layer():
    for mod in _graph():
        layer_of(mod)


# -- the checker itself ----------------------------------------------------------------------------
def test_checker_sees_function_level_and_dynamic_imports(tmp_path, monkeypatch):
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef g():\n    from visec.report.html import HtmlReport\n"
                 "    import importlib\n    importlib.import_module('visec.engine')\n")
    assert imports_of(f) == {"visec.report.html", "visec.engine"}


def test_checker_finds_cycles_and_layers():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("visec.cards") < layer_of("visec.data.manifest") < layer_of("visec.engine.engine")
    assert layer_of("visec.methods.acmf.torch_model") < layer_of("visec.report.forgery") < layer_of("visec.cli")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("visec.nowhere")
