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


# ---- ARCHITECTURE.md names only what exists (so the page cannot silently rot) ----------------------------------

import re  # noqa: E402

ROOT = PACKAGE.parent
_SPAN = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(r"^[\w/-]+(\.py|/)$")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")


def _module_file(parts: list[str]) -> Path | None:
    """The source file of dotted module `parts` (`vs_keep.`-prefixed or not; `plugin.x` / `vs_keep.plugin.x` is
    plugin/x.py), or None when no module has that name."""
    if parts[:2] == ["vs_keep", "plugin"]:
        parts = parts[1:]
    elif parts[:1] == ["vs_keep"]:
        parts = parts[1:]
        if not parts:
            return PACKAGE / "__init__.py"
    for base in (PACKAGE, ROOT / "plugin", ROOT):
        for path in (base.joinpath(*parts, "__init__.py"), base.joinpath(*parts[:-1], f"{parts[-1]}.py")) if parts else ():
            if path.is_file():
                return path
    return None


def _class_members(tree: ast.Module, name: str) -> set[str] | None:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return _top_level_names(ast.Module(body=node.body, type_ignores=[]))
    return None


def _defined_anywhere() -> tuple[set[str], dict[str, set[str]]]:
    """Top-level names of every vs_keep and plugin module, and the members of every class among them."""
    names: set[str] = set()
    classes: dict[str, set[str]] = {}
    for tree in _engine_and_plugin()[0].values():
        names |= _top_level_names(tree)
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, set()).update(_class_members(tree, node.name) or ())
    return names, classes


def _architecture_errors(text: str) -> list[str]:
    """Backticked paths (`face/plan.py`, `plugin/filter.py`, `models/dic/`, `tests/...`) that do not exist under
    vs_keep/ or the repository root; backticked `module.name` / `module.Class.member` whose module exists but does
    not define the name; `Class.member` of a class defined somewhere without that member; and bare identifiers
    that look like code (`CamelCase`, `snake_case`) defined nowhere. Options are written `name=` and skipped."""
    errors = []
    names, classes = _defined_anywhere()
    for span in _SPAN.findall(text):
        span = span.removesuffix("()")
        if _PATH.match(span):
            if not any((base / span).exists() for base in (PACKAGE, ROOT)):
                errors.append(f"`{span}`: no such file or folder under vs_keep/ or the repository root")
        elif _DOTTED.match(span):
            parts = span.split(".")
            for i in range(len(parts), 0, -1):
                path = _module_file(parts[:i])
                if path is None:
                    continue
                if i == len(parts):  # the span names a module
                    break
                tree = ast.parse(path.read_text(), str(path))
                head, rest = parts[i], parts[i + 1:]
                if head not in _top_level_names(tree):
                    errors.append(f"`{span}`: {path.relative_to(ROOT)} defines no {head}")
                elif rest and (members := _class_members(tree, head)) is not None and rest[0] not in members:
                    errors.append(f"`{span}`: class {head} in {path.relative_to(ROOT)} has no {rest[0]}")
                break
            else:
                if parts[0] in classes and parts[1] not in classes[parts[0]]:
                    errors.append(f"`{span}`: class {parts[0]} has no {parts[1]}")
        elif re.fullmatch(r"[A-Z]\w*[a-z]\w*|[A-Z][A-Z0-9_]+|[a-z]\w*_\w*", span) and span not in names and _module_file([span]) is None:
            if not any(span in members for members in classes.values()):
                errors.append(f"`{span}`: defined nowhere in vs_keep/ or plugin/")
    return errors


def test_architecture_names_only_what_exists() -> None:
    errors = _architecture_errors((ROOT / "ARCHITECTURE.md").read_text())
    assert not errors, "ARCHITECTURE.md is stale:\n" + "\n".join(errors)


def test_architecture_check_sees_stale_names() -> None:
    text = ("`face/plan.py` `face/gone.py` `plugin/filter.py` `models/dic/` `engine.validate` `engine.gone` "
            "`filter.build_filter` `numerics.numerics_identity()` `runtime.backends.TorchBackend.gone` `Span.start` "
            "`Sequencer.gone` `Sequencer.run_start` `ClipRun` `GoneClass` `plan_chunk` `gone_function` `overlap=`")
    assert _architecture_errors(text) == [
        "`face/gone.py`: no such file or folder under vs_keep/ or the repository root",
        "`engine.gone`: vs_keep/engine.py defines no gone",
        "`runtime.backends.TorchBackend.gone`: class TorchBackend in vs_keep/runtime/backends.py has no gone",
        "`Sequencer.gone`: class Sequencer has no gone",
        "`GoneClass`: defined nowhere in vs_keep/ or plugin/",
        "`gone_function`: defined nowhere in vs_keep/ or plugin/",
    ]
