"""The package's shape: no import runs against the layer rule, no import cycle, backends apart.

The layer rule (README, "Architecture"): a module imports only from its own package and from
packages in lower layers. Every import counts, including those inside functions and under
TYPE_CHECKING; cycles are looked for among the imports that run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pneumo

PACKAGE = Path(pneumo.__file__).parent

# lowest first; the README's architecture section names the same layers
LAYERS: list[set[str]] = [
    {"errors", "version"},
    {"utils"},
    {"tasks", "config"},
    {"data"},
    {"models", "viz"},
    {"inference"},
    {"explain"},
    {"evaluation"},
    {"training"},
    {"deploy"},
    {"service"},
    {"cli"},
    {"__main__", "__init__"},
]
LAYER = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    """The top-level room of a module: pneumo.inference.batch -> inference; pneumo -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, type_only_runs: bool = False) -> list[tuple[str, int, bool]]:
    """(imported pneumo module, line, runs at import time) for every import of pneumo in a file;
    with `type_only_runs`, an import under TYPE_CHECKING counts as one that runs (a type-only cycle
    is a cycle a reader has to untangle all the same)."""
    tree = ast.parse(path.read_text(), str(path))
    module = _module_name(path)
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, depth: int, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.body:
                    visit_one(sub, depth, True)
                for sub in child.orelse:
                    visit_one(sub, depth, type_only)
                continue
            visit_one(child, depth, type_only)

    def visit_one(child: ast.AST, depth: int, type_only: bool) -> None:
        at_import = depth == 0 and (type_only_runs or not type_only)
        if isinstance(child, ast.Import):
            found.extend((alias.name, child.lineno, at_import) for alias in child.names if alias.name.split(".")[0] == "pneumo")
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:  # relative: resolve against this module's package
                anchor = module.split(".")[: len(module.split(".")) - child.level + (1 if path.name == "__init__.py" else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] == "pneumo":
                for alias in child.names:
                    candidate = f"{base}.{alias.name}"
                    is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists() or (
                        PACKAGE.parent / Path(*candidate.split("."))
                    ).is_dir()
                    found.append((candidate if is_module else base, child.lineno, at_import))
        inner = depth + isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        visit(child, inner, type_only)

    visit(tree, 0, False)
    return found


FILES = sorted(PACKAGE.rglob("*.py"))


def test_every_room_has_a_layer() -> None:
    rooms = {_part(_module_name(f)) for f in FILES}
    assert rooms <= set(LAYER), f"modules outside the layer table: {sorted(rooms - set(LAYER))}; add them to LAYERS and the README"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_against_the_layer_rule(path: Path) -> None:
    here = _part(_module_name(path))
    upward = [
        f"line {line}: {target} ({_part(target)}, layer {LAYER[_part(target)]})"
        for target, line, _ in _imports(path)
        if _part(target) != here and LAYER[_part(target)] >= LAYER[here]
    ]
    assert not upward, f"{path.relative_to(PACKAGE)} ({here}, layer {LAYER[here]}) imports sideways or upward: " + "; ".join(upward)


@pytest.mark.parametrize("type_only_runs", [False, True], ids=["imports that run", "type-only imports too"])
def test_no_import_cycle(type_only_runs: bool) -> None:
    graph: dict[str, set[str]] = {}
    for path in FILES:
        graph[_module_name(path)] = {target for target, _, at_import in _imports(path, type_only_runs) if at_import}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target in graph and not state.get(target):
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node)


def test_the_two_backends_do_not_import_each_other() -> None:
    torch_side = {t for t, _, _ in _imports(PACKAGE / "inference" / "torch_backend.py")}
    onnx_side = {t for t, _, _ in _imports(PACKAGE / "inference" / "onnx_backend.py")}
    assert "pneumo.inference.onnx_backend" not in torch_side
    assert "pneumo.inference.torch_backend" not in onnx_side


@pytest.mark.parametrize(
    "module, absent",
    [
        ("pneumo.inference.torch_backend", "onnxruntime"),
        ("pneumo.models.checkpoint", "onnxruntime"),
        ("pneumo.inference.onnx_backend", "torch"),
        ("pneumo.inference.predict", "torch"),
        ("pneumo.inference.batch", "torch"),
    ],
)
def test_loading_one_backend_does_not_load_the_other(module: str, absent: str) -> None:
    code = f"import sys, {module}; print({absent!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", f"importing {module} loads {absent}"


def test_importing_the_package_changes_no_global_state() -> None:
    """matplotlib's backend, torch's global generator and the classes of the libraries pneumo uses
    (Typer's, for its help) are the user's, whatever pneumo loads."""
    modules = sorted({_module_name(f) for f in FILES if f.name != "__main__.py"})
    code = (
        "import matplotlib, torch, importlib, typer.core, click\n"
        "classes = [typer.core.TyperOption, typer.core.TyperArgument, typer.core.TyperCommand, typer.core.TyperGroup, click.Option, click.Argument]\n"
        "state = lambda: [(c, k, id(v)) for c in classes for k, v in vars(c).items()]\n"
        "matplotlib.use('svg'); torch.manual_seed(123); before = torch.get_rng_state(); classes_before = state()\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(matplotlib.get_backend(), torch.equal(before, torch.get_rng_state()), torch.backends.cudnn.benchmark, state() == classes_before)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["svg", "True", "False", "True"]


def test_the_package_docstring_lists_the_layers_of_this_test() -> None:
    """The architecture line a reader sees (pneumo's docstring) is this test's LAYERS, in order."""
    listed = [
        line.strip().split("  ")[0] for line in (pneumo.__doc__ or "").splitlines() if line.startswith("    ") and "  " in line.strip()
    ]
    rooms = [set(item.replace(" ", "").split(",")) for item in listed if not item.startswith(">>>")]
    assert rooms == LAYERS[:-1], f"pneumo/__init__.py's docstring lists {rooms}; this test's LAYERS: {LAYERS[:-1]}"
