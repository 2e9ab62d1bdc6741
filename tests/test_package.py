"""The engine package imports without VapourSynth or CuPy being pulled in."""

import subprocess
import sys


def test_import_does_not_pull_vapoursynth_or_cupy() -> None:
    code = (
        "import sys, vs_keep, vs_keep.models, vs_keep.cli; "
        "bad = [m for m in ('vapoursynth', 'cupy', 'tensorrt') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "vs_keep", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "restore" in out.stdout and "download" in out.stdout


def test_restore_help_loads_no_torch() -> None:
    """`vs-keep restore --help` answers at once: its options (the piece length of `vs_keep.resume` included) are
    read without importing torch."""
    code = ("import sys; from vs_keep.cli import main\n"
            "try:\n    main(['restore', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--piece" in out.stdout


# ---- module hygiene (read from the source with `ast`: nothing is imported, so this runs in a second) -----------

import ast  # noqa: E402
from pathlib import Path  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[1] / "vs_keep"

#: Modules allowed without `__all__` (none: every engine module says what it exports). The test fails on an entry
#: that has gained `__all__`, so the set cannot go stale.
WITHOUT_ALL: set[str] = set()


def _modules() -> dict[str, ast.Module]:
    """Every engine module (vs_keep/plugin is the VapourSynth side, a separate package), by dotted name."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if rel[1:2] == ("plugin",) or rel[-1] == "__main__":
            continue
        name = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":  # lazy re-exports: the names it serves
            names |= {c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return names


def _declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return list(ast.literal_eval(node.value))
    return None


def test_every_module_declares_all_and_it_names_real_objects() -> None:
    modules = _modules()
    missing, stale, unknown = [], [], []
    for name, tree in modules.items():
        declared = _declared_all(tree)
        if declared is None:
            if name not in WITHOUT_ALL:
                missing.append(name)
            continue
        if name in WITHOUT_ALL:
            stale.append(name)
        defined = _top_level_names(tree)
        unknown += [f"{name}.{n}" for n in declared if n not in defined and f"{name}.{n}" not in modules]
    assert not missing, f"modules without __all__: {missing}"
    assert not stale, f"remove from WITHOUT_ALL (they declare __all__ now): {stale}"
    assert not unknown, f"__all__ names that the module does not define: {unknown}"
    assert WITHOUT_ALL <= set(modules), sorted(WITHOUT_ALL - set(modules))


def _imports(name: str, tree: ast.Module, modules: set[str], is_package: bool) -> set[str]:
    """vs_keep modules that `name` imports anywhere (top level or inside functions)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in modules else base)
    return (found & modules) - {name}


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module (a cycle of any length), iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _engine_and_plugin() -> tuple[dict[str, ast.Module], set[str]]:
    """vs_keep's modules and the VapourSynth layer's (the plugin/ folder, imported as vs_keep.plugin), and which
    of them are packages."""
    modules = _modules()
    for path in sorted((PACKAGE.parent / "plugin").glob("*.py")):
        name = "vs_keep.plugin" if path.stem == "__init__" else f"vs_keep.plugin.{path.stem}"
        modules[name] = ast.parse(path.read_text(), str(path))
    packages = {n for n in modules if n == "vs_keep.plugin" or (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists()}
    return modules, packages


def _import_graph() -> dict[str, set[str]]:
    """vs_keep and the VapourSynth layer as one graph, function-local imports counted."""
    modules, packages = _engine_and_plugin()
    return {n: _imports(n, t, set(modules), n in packages) for n, t in modules.items()}


def test_import_graph_has_no_cycle_of_any_length() -> None:
    cycles = _strongly_connected(_import_graph())
    assert not cycles, f"import cycles (each list imports itself around): {cycles}"


def test_every_relative_import_names_a_module() -> None:
    """A renamed module leaves no stale `from .old import x` behind (the graph above would silently drop it)."""
    modules, packages = _engine_and_plugin()
    missing = []
    for name, tree in modules.items():
        package = name if name in packages else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                if base not in modules and not all(f"{base}.{a.name}" in modules for a in node.names):
                    missing.append(f"{name}: from {'.' * node.level}{node.module or ''}")
    assert not missing, missing


def test_cycle_finder_sees_a_long_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"d"}, "d": {"a"}, "e": {"a"}, "f": set()}
    assert _strongly_connected(graph) == [["a", "b", "c", "d"]]
