"""The repository's layout rules, checked on the source: imports point one way, the library needs torch alone.

    vmfprior  <-  common  <-  eval  <-  {vae, gan, ckd}

``vmfprior`` imports only the standard library, torch and numpy; no package imports one to its right; the
applications do not import each other; no package resolves modules by name (``importlib.import_module``); and
the modules of each package import each other without cycles.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vmfprior", "common", "eval", "vae", "gan", "ckd")
MAY_IMPORT = {
    "vmfprior": {"vmfprior"},
    "common": {"vmfprior", "common"},
    "eval": {"vmfprior", "common", "eval"},
    "vae": {"vmfprior", "common", "eval", "vae"},
    "gan": {"vmfprior", "common", "eval", "gan"},
    "ckd": {"vmfprior", "common", "eval", "ckd"},
}
LIBRARY_THIRD_PARTY = {"torch", "numpy"}


def _sources(package):
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path):
    """(module name, line, at module level) of every import in a file; relative imports resolved to the package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module_level = {id(node) for node in tree.body}
    package = path.relative_to(ROOT).parts[0]
    found = []
    for node in ast.walk(tree):
        top = id(node) in module_level
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                name = package + ("." + name if name else "")
            found.append((name, node.lineno, top))
            found += [(f"{name}.{alias.name}", node.lineno, top) for alias in node.names]
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way(package):
    own = set(PACKAGES)
    bad = []
    for path in _sources(package):
        for name, line, _ in _imports(path):
            top = name.split(".")[0]
            if top in own and top not in MAY_IMPORT[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
            if (
                package == "vmfprior"
                and top not in own
                and top not in LIBRARY_THIRD_PARTY
                and top not in sys.stdlib_module_names
                and top != "__future__"
            ):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name} (the library needs torch and numpy alone)")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_resolved_by_name(package):
    calls = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in _sources(package)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in ("import_module", "__import__")
    ]
    assert not calls, calls


def test_module_level_imports_have_no_cycles():
    graph = {}
    for package in PACKAGES:
        for path in _sources(package):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            graph[module] = {name for name, _, top in _imports(path) if top}
    graph = {module: {name for name in names if name in graph and name != module} for module, names in graph.items()}
    state = {}

    def visit(module, trail):
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", "import cycle: " + " -> ".join(trail + [module])
        state[module] = "open"
        for name in sorted(graph[module]):
            visit(name, trail + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def _top_level_modules_after(statement):
    code = f"import sys; {statement}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    return set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout.split()
    )


def test_importing_the_library_loads_nothing_beyond_torch_and_numpy():
    baseline = _top_level_modules_after("import torch, numpy")
    added = _top_level_modules_after("import vmfprior, vmfprior.heads, vmfprior.svae") - baseline
    third_party = {name for name in added if name not in sys.stdlib_module_names and not name.startswith("_")}
    assert third_party == {"vmfprior"}, sorted(third_party)
