"""The shape of the package, held by tests: no import cycles (imports inside functions counted), library code
never imports a command, and reading a recipe never imports torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "adapt"


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports, anywhere in its body (module level or inside functions).

    `from a.b import c` counts as importing `a.b.c` when that is a module, else `a.b`."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                assert not isinstance(node, ast.ImportFrom) or node.level == 0, f"{path}: relative import"
                continue
            for target in targets:
                if target.split(".")[0] == "adapt" and (resolved := resolve(target)) and resolved != mod:
                    graph[mod].add(resolved)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def kind(module: str) -> str:
    """`command`: a module at the top of the package (`adapt.train`, `adapt.cli`, ...) or a `__main__`;
    `api`: the package itself (`adapt.run`, `adapt.load_recipe`); `library`: everything in the stage packages."""
    if module == "adapt":
        return "api"
    if module.endswith(".__main__") or (module.count(".") == 1 and modules()[module].name != "__init__.py"):
        return "command"
    return "library"


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    # `adapt.train.main` imports the training run inside the function (torch only once a run starts).
    assert "adapt.training.run" in graph["adapt.train"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_library_never_imports_a_command():
    graph = import_graph()
    bad = sorted((m, t) for m, targets in graph.items() if kind(m) == "library" for t in targets
                 if kind(t) != "library")
    assert bad == [], "library modules must import library modules only (commands are thin layers on top)"


def test_every_command_is_thin_and_alike():
    """A command module has `make_parser` and `main`, and is at most a screen or two: the work is in the library."""
    for mod, path in modules().items():
        if kind(mod) != "command" or mod in ("adapt.cli", "adapt.__main__"):
            continue
        tree = ast.parse(path.read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert {"make_parser", "main"} <= names, f"{mod} needs make_parser() and main(argv)"
        code_lines = [line for line in path.read_text().splitlines() if line.strip()]
        assert len(code_lines) < 120, f"{mod} has {len(code_lines)} lines: move the work into the library"


def test_reading_and_validating_every_shipped_recipe_imports_no_torch():
    recipes = sorted(str(p) for p in (ROOT / "recipes").glob("*.yaml"))
    assert len(recipes) >= 9
    code = (
        "import json, sys\n"
        "import adapt.recipe\n"
        "from adapt.recipe import load_recipe\n"
        "from adapt.data.specs import spec_problems\n"
        "from adapt.model.limits import model_problems\n"
        f"for path in {recipes!r}:\n"
        "    recipe = load_recipe(path)\n"
        "    spec_problems(recipe)\n"
        "    assert model_problems(recipe.model.name_or_path, recipe.data.max_length) == []\n"
        "heavy = ('torch', 'transformers', 'peft', 'datasets', 'accelerate')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_validate_command_imports_no_torch(tiny_recipe):
    code = ("import json, sys\nfrom adapt.cli import main\n"
            f"rc = main(['validate', {str(tiny_recipe)!r}])\n"
            "print(json.dumps([rc, [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [0, []]
