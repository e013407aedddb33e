"""The package's structure, read from its source (AST, nothing imported): the import rules of
docs/architecture.md hold. Every `import` counts, also those inside functions."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "toolkit"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "bundled" not in p.parts}


MODULES = _modules()


def _resolve(name: str) -> str:
    """The module an imported name lives in (`toolkit.x.y` may be a module or a name in module `toolkit.x`)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str) -> set[str]:
    """toolkit modules that `module` imports."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{a.name}" for a in node.names}
    return {_resolve(n) for n in found if n.split(".")[0] == "toolkit"} - {module}


GRAPH = {m: _imports(m) for m in MODULES}


def _is_cli(module: str) -> bool:
    """Entry points: `cli.py` (also `cli_*.py` / `*_cli.py`, so a new one cannot hide) and the demo verb."""
    name = module.rsplit(".", 1)[-1]
    return name == "cli" or name.startswith("cli_") or name.endswith("_cli") or module == "toolkit.demo"


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else "core"


def _stage_order() -> list[str]:
    """The order written in docs/architecture.md: `core → deploy → ...`."""
    [line] = [m for m in re.findall(r"`([a-z]+(?: → [a-z]+)+)`", ARCHITECTURE.read_text())]
    return line.split(" → ")


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert _cycles() == []


def test_no_library_module_imports_a_cli_module():
    bad = [f"{m} imports {t}" for m, targets in GRAPH.items() if not _is_cli(m) for t in targets if _is_cli(t)]
    assert bad == []


def test_every_stage_is_placed_in_the_documented_order():
    order = _stage_order()
    assert order[0] == "core" and len(set(order)) == len(order)
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(order) - {"core"}, "a stage package missing from (or extra in) docs/architecture.md"


def test_imports_follow_the_stage_order():
    order = _stage_order()
    rank = {stage: i for i, stage in enumerate(order)}
    bad = [f"{m} ({_stage(m)}) imports {t} ({_stage(t)})" for m, targets in GRAPH.items() if not _is_cli(m)
           for t in targets if rank.get(_stage(t), len(order)) > rank.get(_stage(m), len(order))]
    assert bad == []


def test_each_stage_has_one_cli_module():
    for package in (p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        clis = sorted(p.name for p in package.glob("*.py") if "cli" in p.stem)
        assert clis in ([], ["cli.py"]), f"{package.name}: {clis}"


def test_no_package_binds_a_name_that_shadows_its_own_module():
    bad = []
    for module, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        children = {p.stem for p in path.parent.glob("*.py") if p.stem != "__init__"}
        children |= {p.name for p in path.parent.iterdir() if (p / "__init__.py").is_file()}
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = {node.name}
            elif isinstance(node, ast.Assign):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.ImportFrom) and node.module != module:  # `from pkg import child` is the child
                names = {a.asname or a.name for a in node.names}
            else:
                continue
            bad += [f"{module}.{n}" for n in names & children]
    assert bad == []


def test_each_artifact_loader_is_exposed_by_its_stage_package():
    """`toolkit.artifacts.load` finds loaders by the manifest's stage, each in the public API of the stage
    package that makes that artifact."""
    import importlib

    from toolkit.artifacts import INPAINTER_STAGES, LOADERS

    assert set(INPAINTER_STAGES) <= set(LOADERS)
    for stage, target in LOADERS.items():
        module, name = target.split(":")
        assert module.count(".") == 1 and (PACKAGE / module.split(".")[1] / "__init__.py").is_file(), target
        assert callable(getattr(importlib.import_module(module), name)), target


def test_the_rules_catch_what_they_guard_against():
    """The checks above see a circle, a CLI import and an upward import when there is one."""
    saved = {m: set(t) for m, t in GRAPH.items()}
    try:
        GRAPH["toolkit.bench.transport"].add("toolkit.bench.cli")
        GRAPH["toolkit.bench.cli"].add("toolkit.bench.transport")
        assert any("toolkit.bench.transport" in c for c in _cycles())
        rank = {stage: i for i, stage in enumerate(_stage_order())}
        assert rank[_stage("toolkit.onboard.config")] > rank[_stage("toolkit.deploy.export")]
        assert _is_cli("toolkit.deploy.cli") and _is_cli("toolkit.deploy.cli_export")
        assert not _is_cli("toolkit.deploy.export")
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
