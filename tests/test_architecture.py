"""The package's shape: no import cycle, no private name imported across modules, a
thin public layer over ``jaxkl._src``, and the layers of docs/design.md respected.

The import graph is read from the source (``ast``), so the test sees imports inside
functions too.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxkl"

# Layers from the bottom up (docs/design.md): a module may import its own layer or lower
# ones, never a higher one. Keys are module-name prefixes under jaxkl._src.
LAYERS = [
    ("foundation", ("validation", "numerics", "linalg", "vocabulary", "version")),
    ("estimators", ("estimators",)),
    ("statistics", ("stats",)),
    ("distributions", ("distributions",)),
    ("monte carlo", ("montecarlo", "sharding")),
    ("reference and fitting", ("reference", "fitting")),
    ("rl", ("rl",)),
]


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if p.name != "conftest.py"}


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".")
    if not MODULES[module].name == "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) for every import in ``module``."""
    found = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.startswith("jaxkl")]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.startswith("jaxkl"):
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    found.append((submodule, None) if submodule in MODULES else
                                 (target, alias.name))
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        targets = set()
        for target, _ in _imports(module):
            # `import jaxkl.a.b` also runs jaxkl.a's __init__; count the deepest module.
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def _find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_cycle():
    # A package imports its submodules from __init__ by design; those edges go downward
    # (parent -> child) and are not part of a cycle unless a child imports the parent.
    cycle = _find_cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_detector_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_a_private_name_of_another_module():
    offences = [
        f"{module} imports {name} from {target}"
        for module in MODULES
        for target, name in _imports(module)
        if name is not None and name.startswith("_") and target != module
        and not (name.startswith("__") and name.endswith("__"))  # dunders are not private
    ]
    assert not offences, "\n".join(offences)


def _layer(module: str) -> int | None:
    if not module.startswith("jaxkl._src."):
        return None
    head = module.removeprefix("jaxkl._src.").split(".")[0]
    for index, (_, prefixes) in enumerate(LAYERS):
        if head in prefixes:
            return index
    raise AssertionError(f"{module} belongs to no layer of docs/design.md")


def test_implementation_modules_import_only_their_layer_or_lower():
    graph = _graph()
    offences = []
    for module, targets in graph.items():
        level = _layer(module)
        for target in targets:
            target_level = _layer(target)
            if level is not None and target_level is not None and target_level > level:
                offences.append(f"{module} ({LAYERS[level][0]}) imports {target} "
                                f"({LAYERS[target_level][0]})")
            if level is not None and not target.startswith("jaxkl._src"):
                offences.append(f"{module} imports the public module {target}")
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("jaxkl._src")))
def test_public_modules_only_re_export(module):
    """A public module holds a docstring, imports and ``__all__``: no code of its own."""
    tree = ast.parse(MODULES[module].read_text())
    body = tree.body[1:] if ast.get_docstring(tree) else tree.body
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Assign) and [t.id for t in node.targets
                                             if isinstance(t, ast.Name)] in (["__all__"],
                                                                             ["__version__"]):
            continue
        raise AssertionError(f"{module} line {node.lineno}: {ast.dump(node)[:80]}")


def test_every_public_name_is_listed_and_resolves():
    import importlib

    for module in sorted(m for m in MODULES if not m.startswith("jaxkl._src")):
        mod = importlib.import_module(module)
        assert hasattr(mod, "__all__"), module
        missing = [name for name in mod.__all__ if not hasattr(mod, name)]
        assert not missing, f"{module}.__all__ lists missing names {missing}"


def test_the_design_document_names_only_files_that_exist():
    """docs/design.md's tour and layer map stay true as code moves."""
    import re

    text = (ROOT / "docs" / "design.md").read_text()
    paths = set(re.findall(r"`((?:jaxkl|experiments|tests|scripts)/[\w/.]+?)(?:::\w+)?`", text))
    assert len(paths) > 15, paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"docs/design.md names missing files: {missing}"
    for module in LAYERS:
        for prefix in module[1]:
            assert prefix in text, f"docs/design.md does not place {prefix} in the layers"


def test_no_file_cites_a_design_document_that_is_not_in_the_repository():
    offences = []
    for path in ROOT.rglob("*"):
        if (not path.is_file() or path.suffix not in {".py", ".md", ".toml", ".sh", ".txt"}
                or any(part.startswith(".") or part == "build" for part in
                       path.relative_to(ROOT).parts)):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if "DESIGN.md" in line and path != pathlib.Path(__file__):
                offences.append(f"{path.relative_to(ROOT)}:{number}")
    assert not offences, offences


def test_pip_install_puts_only_jaxkl_into_site_packages():
    """``experiments`` runs from the clone; installed, it would clash with users' folders."""
    import tomllib

    import setuptools

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = setuptools.find_packages(str(ROOT), include=include)
    assert {p.split(".")[0] for p in packages} == {"jaxkl"}, packages
    assert "jaxkl._src.rl" in packages and "jaxkl.rl" in packages


def test_the_version_is_written_in_one_place():
    """pyproject.toml reads it from jaxkl/_src/version.py; the installed metadata, the
    README's citation and the CHANGELOG's newest entry agree with it."""
    import importlib.metadata
    import re
    import tomllib

    import jaxkl

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in config["project"] and "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"]["attr"] == (
        "jaxkl._src.version.__version__")
    assert importlib.metadata.version("jaxkl") == jaxkl.__version__
    assert f"Version {jaxkl.__version__}" in (ROOT / "README.md").read_text()
    newest = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M).group(1)
    assert newest == jaxkl.__version__
    assert (PACKAGE / "py.typed").exists()
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["jaxkl"]
