"""The first-party import graph (src/cosmos, components, pipelines): layered and free of cycles.

Every module is parsed with ``ast``; nothing is imported. An import counts wherever it is written:
at module level, inside a function (a lazy import is still a dependency) or under
``if TYPE_CHECKING:`` (a typing-only dependency). Implicit imports of parent packages are not
edges; ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.

* Layering (every kind of import): a module may import its own layer and the layers below, never
  one above -- see :data:`LAYERS`. The library never imports ``components``/``pipelines`` except
  ``cosmos.cli``, lazily (its ``pipeline`` verbs drive them); ``components`` may import
  ``cosmos`` and ``components``; ``pipelines`` may import anything.
* Cycles: none through module-level or function-level imports. A module-level cycle means a
  half-initialised module at import time; one closed by a function-level import is legal Python but
  still two modules that cannot be understood, tested or moved apart, and the lazy import hides it
  (the fix is to move the shared code below both, as :mod:`cosmos.cli.args`,
  :mod:`cosmos.data.nifti_errors`, :mod:`cosmos.data.content` and :mod:`pipelines.console.base` do).
  Imports under ``if TYPE_CHECKING:`` never run and are left out: two classes that name each other
  in annotations are typed that way.
* The library never imports ``kfp`` at module level (KFP is the orchestrator's dependency, not the
  library's; see ``cosmos.cli.pipeline_cmds``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("cosmos", "components", "pipelines")

# Layer of each cosmos module or subpackage (the longest matching prefix decides). Lower layers may
# not import higher ones; within a layer anything goes (cycles aside).
LAYERS = {
    # 0: foundations, no domain knowledge. "cosmos" is the package root (an empty __init__;
    # segmentation.registration imports it only to locate the code a registered model ships).
    "cosmos": 0,
    "cosmos.errors": 0,
    "cosmos.logs": 0,
    "cosmos.cpu": 0,
    "cosmos.secrets": 0,
    "cosmos.process_guard": 0,
    "cosmos.config": 0,
    "cosmos.config_schema": 0,
    "cosmos.config_validation": 0,
    "cosmos.config_overrides": 0,
    "cosmos.resume": 0,
    "cosmos.events": 0,
    "cosmos.tracking": 0,
    # 1: the data: crossMoDA layout, NIfTI I/O, storage, validation, phantom, scan decoding; listed by
    # name where a module was split: geometry, nifti_errors and content are below nifti (nifti
    # re-exports the first two; modality re-exports content)
    "cosmos.data": 1,
    "cosmos.data.nifti": 1,
    "cosmos.data.geometry": 1,
    "cosmos.data.nifti_errors": 1,  # NiftiError, below nifti and geometry (both raise it)
    "cosmos.data.content": 1,  # constant image / label map, below nifti and modality (both use it)
    # 2: the two stages that need only data
    "cosmos.translation": 2,
    "cosmos.evaluation": 2,
    # 3: nnU-Net adapter; listed by name where a module was split: trainer (the lookup and budget)
    # re-exports the trainer classes, the recipe and the warm start
    "cosmos.segmentation": 3,
    "cosmos.segmentation.trainer": 3,
    "cosmos.segmentation.nnunet_trainers": 3,
    "cosmos.segmentation.recipe": 3,
    "cosmos.segmentation.warm_start": 3,
    # 4: what orchestrates segmentation
    "cosmos.selftraining": 4,
    "cosmos.ablation": 4,
    "cosmos.ablation_seeds": 4,
    # 5, 6: front ends
    "cosmos.serving": 5,
    "cosmos.cli": 6,
    "cosmos.cli.args": 6,  # the verbs' shared options, below cosmos.cli and the verb modules
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    name: str  # the imported module as written (resolved for relative imports), any package
    kind: str  # "module", "function" or "typing" (under ``if TYPE_CHECKING:``)
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line} -> {self.name} ({self.kind}-level)"


def _discover() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root, top in ((REPO / "src", "cosmos"), (REPO, "components"), (REPO, "pipelines")):
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _discover()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_of(module: str, path: Path) -> list[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[Import] = []

    def visit(nodes, kind: str) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                out.extend(Import(module, alias.name, kind, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    out.append(Import(module, sub if sub in MODULES else base, kind, node.lineno))
            elif isinstance(node, ast.If) and kind == "module" and _is_type_checking(node.test):
                visit(node.body, "typing")
                visit(node.orelse, "module")
            else:
                inner = "function" if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else kind
                visit(ast.iter_child_nodes(node), inner)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body, "module")
    return out


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports_of(module, path)]


def _first_party(name: str) -> str | None:
    """The known module ``name`` refers to (longest known prefix); None for third-party names."""
    if name.split(".")[0] not in FIRST_PARTY:
        return None
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


EDGES = [(imp, target) for imp in IMPORTS if (target := _first_party(imp.name)) and target != imp.source]


def _layer(module: str) -> int | None:
    """Layer of the longest listed prefix; the bare root "cosmos" matches only itself."""
    if module == "cosmos":
        return LAYERS["cosmos"]
    parts = module.split(".")
    for i in range(len(parts), 1, -1):
        layer = LAYERS.get(".".join(parts[:i]))
        if layer is not None:
            return layer
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a closed path, first node repeated at the end) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles = []
    for comp in components:
        members, start = set(comp), min(comp)
        paths = {start: [start]}
        queue = [start]
        while queue:  # breadth-first back to start, inside the component: a shortest cycle
            v = queue.pop(0)
            nxt = sorted(graph[v] & members)
            if start in nxt:
                cycles.append(paths[v] + [start])
                break
            for w in nxt:
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return sorted(cycles)


def _graph(kinds: set[str]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for imp, target in EDGES:
        if imp.kind in kinds:
            graph[imp.source].add(target)
    return graph


# ------------------------------------------------------------------------------------------- tests
def test_the_graph_is_not_empty():
    """Guards the other tests against passing on nothing (a moved tree, a broken parser)."""
    for module in ("cosmos.data.layout", "cosmos.segmentation.registry", "cosmos.cli", "components", "pipelines"):
        assert module in MODULES
    kinds = {imp.kind for imp, _ in EDGES}
    assert {"module", "function", "typing"} <= kinds
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_cycle_through_module_level_imports():
    cycles = _cycles(_graph({"module"}))
    assert not cycles, "import cycles at module level:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _step(source: str, target: str) -> Import:
    """The first import (module- or function-level) that makes ``source`` depend on ``target``."""
    return next(imp for imp, t in EDGES if imp.source == source and t == target and imp.kind != "typing")


def test_no_cycle_through_function_level_imports():
    """A lazy import only postpones a cycle to the first call; the two modules still depend on each other."""
    cycles = _cycles(_graph({"module", "function"}))
    described = [" -> ".join(c) + "\n    " + "\n    ".join(str(_step(a, b)) for a, b in zip(c, c[1:])) for c in cycles]
    assert not cycles, "import cycles (move the shared code into a module below both):\n" + "\n".join(described)


def test_no_upward_import():
    problems = []
    for imp, target in EDGES:
        source_top, target_top = imp.source.split(".")[0], target.split(".")[0]
        if source_top == "pipelines":
            continue
        if source_top == "components":
            if target_top == "pipelines":
                problems.append(f"{imp}: components may import cosmos and components only")
            continue
        if target_top != "cosmos":  # the library importing components/pipelines
            in_cli = imp.source == "cosmos.cli" or imp.source.startswith("cosmos.cli.")
            if not (in_cli and imp.kind == "function"):
                problems.append(f"{imp}: only cosmos.cli may import {target_top}, and only inside a function")
            continue
        source_layer, target_layer = _layer(imp.source), _layer(target)
        if source_layer is None or target_layer is None:
            missing = imp.source if source_layer is None else target
            problems.append(f"{imp}: {missing} is in no layer; add it to LAYERS in {Path(__file__).name}")
        elif target_layer > source_layer:
            problems.append(f"{imp}: layer {source_layer} imports layer {target_layer}")
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_library_never_imports_kfp_at_module_level():
    hits = [
        str(imp)
        for imp in IMPORTS
        if imp.source.split(".")[0] == "cosmos" and imp.kind == "module" and imp.name.split(".")[0] == "kfp"
    ]
    assert not hits, "kfp imported at module level by the library:\n" + "\n".join(hits)


# A module split in two keeps every name importable from where it was (callers, recorded class names):
# the old module re-exports each public top-level name its parts define.
SPLITS = {
    "cosmos.segmentation.trainer": (
        "cosmos.segmentation.nnunet_trainers",
        "cosmos.segmentation.recipe",
        "cosmos.segmentation.warm_start",
    ),
    "cosmos.data.nifti": ("cosmos.data.geometry", "cosmos.data.nifti_errors"),
    "cosmos.data.modality": ("cosmos.data.content",),
    "cosmos.cli": ("cosmos.cli.args",),
    "pipelines.console.views": ("pipelines.console.base",),
    "pipelines.cosmos_pipeline": ("pipelines.task_settings",),
}


def _defined_names(path: Path) -> set[str]:
    """Top-level functions, classes and assigned names of a module (not its imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _imported_from(path: Path, module: str) -> set[str]:
    """Names ``path`` binds at module level by ``from <module> import ...``."""
    return {
        alias.asname or alias.name
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.ImportFrom) and node.module == module
        for alias in node.names
    }


def test_a_split_module_re_exports_its_parts():
    missing = []
    for old, parts in SPLITS.items():
        for part in parts:
            public = {n for n in _defined_names(MODULES[part]) if not n.startswith("_") and n != "log"}
            assert public, f"{part} defines nothing public: a moved or empty module"
            absent = public - _imported_from(MODULES[old], part) - _defined_names(MODULES[old])
            missing.extend(f"{old} lacks {part}.{name}" for name in sorted(absent))
    assert not missing, "names no longer importable from the module they came from:\n" + "\n".join(missing)
