"""The package's import structure: no cycles, and the layers import downwards only."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sphinx_vi"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module → the sphinx_vi modules it imports anywhere in its source (top level, functions, TYPE_CHECKING)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, path.name == "__init__.py", node)
                names = [f"{target}.{a.name}" if f"{target}.{a.name}" in files else target for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in files:
                    name = name.rpartition(".")[0]  # `import a.b.c` of a non-module attribute → its module
                if name.startswith("sphinx_vi") and name != module:
                    edges.add(name)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


GRAPH = import_graph()


def test_the_graph_sees_every_module_and_its_imports():
    assert "sphinx_vi.api" in GRAPH and "sphinx_vi.generation" in GRAPH["sphinx_vi.session"]
    assert "sphinx_vi.factory" in GRAPH["sphinx_vi.api"]  # `from . import factory`
    assert "sphinx_vi.guidance.targets" in GRAPH["sphinx_vi.guidance"]


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_a_cycle_is_found_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("lower, upper", [
    ("sphinx_vi.train", "sphinx_vi.eval"),  # training never needs evaluation
    ("sphinx_vi.train", "sphinx_vi.api"),  # nor the task layer: it builds models through the factory
    ("sphinx_vi.eval", "sphinx_vi.api"),
    ("sphinx_vi.generation", "sphinx_vi.api"),
    ("sphinx_vi.factory", "sphinx_vi.api"),
    ("sphinx_vi.guidance", "sphinx_vi.train"),  # guidance targets serve train and eval alike
])
def test_layers_import_downwards(lower, upper):
    offenders = sorted(m for m in GRAPH if _inside(m, lower) and any(_inside(r, upper) for r in _reaches(GRAPH, m)))
    assert offenders == [], f"{offenders} import {upper} (directly or through other modules)"


def test_nothing_in_the_library_imports_experiments_or_benchmarks():
    library = [m for m in GRAPH if not any(_inside(m, p) for p in ("sphinx_vi.experiments", "sphinx_vi.bench"))]
    for module in library:
        assert not any(_inside(r, "sphinx_vi.experiments") or _inside(r, "sphinx_vi.bench") for r in GRAPH[module]), module


# docs/ARCHITECTURE.md, "Layers": a module may import its own layer and the layers before it.
LAYERS = [
    ["sphinx_vi.text", "sphinx_vi.images", "sphinx_vi.views", "sphinx_vi.grounding", "sphinx_vi.prompts", "sphinx_vi.fonts",
     "sphinx_vi.draw", "sphinx_vi.assets",
     "sphinx_vi.weights", "sphinx_vi.precision", "sphinx_vi.quantization"],
    ["sphinx_vi.vision", "sphinx_vi.configuration", "sphinx_vi.modeling", "sphinx_vi.processing", "sphinx_vi.presets",
     "sphinx_vi.decoding", "sphinx_vi.packed_attention", "sphinx_vi.label_loss"],
    ["sphinx_vi.factory", "sphinx_vi.generation", "sphinx_vi.session", "sphinx_vi.data", "sphinx_vi.guidance"],
    ["sphinx_vi.train", "sphinx_vi.eval", "sphinx_vi.api", "sphinx_vi.tools", "sphinx_vi.convert",
     "sphinx_vi.summary", "sphinx_vi.detectors"],
    ["sphinx_vi.cli", "sphinx_vi.__main__", "sphinx_vi.infer", "sphinx_vi.serve", "sphinx_vi.bench", "sphinx_vi.experiments", "sphinx_vi"],
]


def _layer(module: str) -> int:
    found = [i for i, layer in enumerate(LAYERS) for p in layer if _inside(module, p) and (p != "sphinx_vi" or module == p)]
    assert found, f"{module} is in no layer of docs/ARCHITECTURE.md"
    return min(found)


def test_every_import_goes_to_the_same_layer_or_a_lower_one():
    upward = sorted(f"{m} → {r}" for m in GRAPH for r in GRAPH[m] if _layer(r) > _layer(m))
    assert upward == []
