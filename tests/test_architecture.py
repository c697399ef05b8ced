"""The layers of the core library: ZenML-free, acyclic, read one way (data -> model -> train -> evaluate / serve)."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import kickvision

PACKAGE = Path(kickvision.__file__).parent
# Each room of kickvision/ may import only from rooms of its own rank or below.
RANKS = {
    "errors": 0,
    "config": 1,
    "data": 2,
    "model": 3,
    "train": 4,
    "evaluate": 5,
    "serve": 6,
    "tracking": 6,
    "watch": 7,
    "review": 7,
    "cli": 8,
    # Import paths that models registered before the restructure use: on top, nothing imports them.
    "bundle": 9,
    "inference": 9,
}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {"kickvision": PACKAGE / "__init__.py"}
    for info in pkgutil.walk_packages([str(PACKAGE)], "kickvision."):
        relative = info.name.split(".")[1:]
        path = PACKAGE.joinpath(*relative)
        found[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    return found


def _kickvision_imports(path: Path) -> set[str]:
    """Every kickvision module `path` imports, at module level or inside functions (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for guard in ast.walk(tree)
        if isinstance(guard, ast.If) and "TYPE_CHECKING" in ast.unparse(guard.test)
        for node in ast.walk(guard)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kickvision"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("kickvision"))
    return names


def _room(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def _rank(module: str) -> int:
    return RANKS.get(_room(module), 0)  # the package root (offline defaults) sits below everything


def test_every_module_is_found_and_none_is_forgotten():
    files = {p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert files == set(_modules().values())


def test_core_library_imports_no_zenml():
    modules = [m for m in _modules() if not m.endswith("__main__")]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(sorted(m for m in sys.modules if m.split('.')[0] == 'zenml'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_rooms_import_only_their_own_rank_or_below():
    wrong = [
        f"{module} ({_room(module)}) imports {imported} ({_room(imported)})"
        for module, path in _modules().items()
        for imported in _kickvision_imports(path)
        if _rank(imported) > _rank(module)
    ]
    assert not wrong, "\n".join(wrong)


def test_there_are_no_import_cycles_even_through_imports_inside_functions():
    modules = _modules()
    graph = {m: {i for i in _kickvision_imports(p) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(module: str, trail: list[str]) -> list[str] | None:
        state[module] = 1
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                return [*trail, module, nxt]
            if nxt not in state and (cycle := visit(nxt, [*trail, module])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, " -> ".join(cycle)


def test_no_module_is_over_400_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
