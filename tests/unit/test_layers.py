"""The architecture as a test: only backend/ imports libvirt; imports point down the layers;
no import cycles (imports inside functions count); core code imports from the defining module,
never ``from virtkit import X``; the CLI reaches virtkit only through its public API."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "virtkit"

# Lower numbers are lower layers; a module may import its own layer and those below.
LAYERS = {
    "errors": 0,
    "specs": 0,
    "_version": 0,
    "settings": 0,
    "extras": 0,
    "actionlog": 0,
    "cloudinit": 0,
    "xml": 1,
    "backend": 2,
    "services": 3,
    "cluster": 3,
    "ksm": 3,
    "metrics": 3,
    "doctor": 3,
    "tuning": 3,
    "client": 4,
    "cli": 5,
    "api": 5,
    "web": 5,
    "__init__": 5,
    "__main__": 5,
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, module: str = "virtkit.x") -> list[str]:
    """Absolute names of everything a module imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            names.append(".".join([*base, *([node.module] if node.module else [])]))
    return names


def _violations(modules: list[tuple[str, Path]]) -> tuple[list[str], list[str]]:
    """(modules importing libvirt outside backend/, imports pointing up the layers)."""
    libvirt_users, upward = [], []
    for module, path in modules:
        imported = _imports(path, module)
        layer = _layer(module)
        if layer != "backend" and any(i == "libvirt" or i.startswith("libvirt.") for i in imported):
            libvirt_users.append(module)
        if layer == "__init__":
            continue
        for name in imported:
            if name.startswith("virtkit.") and LAYERS.get(_layer(name), 99) > LAYERS[layer]:
                upward.append(f"{module} imports {name}")
    return libvirt_users, upward


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        out.append((".".join(rel.parts), path))
    return out


def test_every_module_is_in_a_known_layer() -> None:
    unknown = {_layer(m) for m, _ in _modules()} - set(LAYERS)
    assert not unknown, f"add these to LAYERS (and docs/architecture.md): {unknown}"


def test_only_backend_imports_libvirt_and_imports_point_down() -> None:
    libvirt_users, upward = _violations(_modules())
    assert libvirt_users == []
    assert upward == []


def test_the_check_catches_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import libvirt\nfrom virtkit.cli.main import cli\nfrom ..client import Client\n"
    )
    libvirt_users, upward = _violations([("virtkit.services.bad", bad)])
    assert libvirt_users == ["virtkit.services.bad"]
    assert upward == [
        "virtkit.services.bad imports virtkit.cli.main",
        "virtkit.services.bad imports virtkit.client",
    ]


# -- the import graph: cycles, the package root, the CLI's reach ---------------------------------


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the virtkit module imported (``from a import b``: ``a.b`` if it is a module)
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``: never runs, so it cannot close a cycle
    from_root: tuple[str, ...] = ()  # ``from virtkit import X``: the names X that are no module


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every node, each with whether it sits under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, True
                yield from _walk(stmt, True)
            for stmt in child.orelse:
                yield stmt, type_only
                yield from _walk(stmt, type_only)
            continue
        yield child, type_only
        yield from _walk(child, type_only)


def _virtkit_imports(path: Path, module: str, known: set[str]) -> list[Import]:
    """The imports of virtkit modules in one file, at any depth (functions included)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = []
    for node, type_only in _walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                while parts and ".".join(parts) not in known:
                    parts.pop()
                if parts:
                    out.append(Import(module, ".".join(parts), node.lineno, type_only))
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join([*base, *([node.module] if node.module else [])])
            if source not in known:
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{source}.{n}" in known]
            for name in submodules:
                out.append(Import(module, f"{source}.{name}", node.lineno, type_only))
            if len(submodules) < len(names):
                others = tuple(n for n in names if n not in submodules)
                root = others if source == "virtkit" else ()
                out.append(Import(module, source, node.lineno, type_only, root))
    return out


def _graph(modules: list[tuple[str, Path]]) -> list[Import]:
    known = {m.removesuffix(".__init__") for m, _ in modules}
    return [
        imp
        for module, path in modules
        for imp in _virtkit_imports(path, module.removesuffix(".__init__"), known)
    ]


def _cycles(imports: list[Import]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected set of modules (Tarjan)."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.type_only and imp.target != imp.module:
            edges.setdefault(imp.module, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [_a_cycle(sorted(c)[0], c, edges) for c in components]


def _a_cycle(start: str, component: set[str], edges: dict[str, set[str]]) -> list[str]:
    """The shortest way from ``start`` back to itself inside its component (breadth first)."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(edges.get(node, set()) & component):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"{start} is in no cycle")


# What cli/ may import from virtkit: the public API, its pure lower modules, and itself.
CLI_MAY_IMPORT = (
    "virtkit.cli", "virtkit.client", "virtkit.specs", "virtkit.errors", "virtkit.settings",
    "virtkit._version", "virtkit.cloudinit",
    "virtkit.actionlog",  # the log context filter cli/logs.py installs on its handler
    "virtkit.api.app",  # `virtkit serve` runs the API: one entry point starting another
    "virtkit.metrics.http",  # `virtkit exporter` runs the exporter's HTTP server, likewise
)  # fmt: skip


def _cli_reach(imports: list[Import]) -> list[str]:
    return [
        f"{imp.module}:{imp.line} imports {imp.target}"
        for imp in imports
        if _layer(imp.module) == "cli"
        and imp.target != "virtkit"
        and not any(imp.target == ok or imp.target.startswith(ok + ".") for ok in CLI_MAY_IMPORT)
    ]


def _from_root(imports: list[Import]) -> list[str]:
    return [
        f"{imp.module}:{imp.line}: from virtkit import {', '.join(imp.from_root)}"
        for imp in imports
        if imp.from_root
    ]


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph(_modules()))
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_core_code_does_not_import_from_the_package_root() -> None:
    """``virtkit/__init__`` re-exports from every layer: importing from it would point up."""
    assert _from_root(_graph(_modules())) == []


def test_the_cli_uses_only_the_public_api() -> None:
    """The CLI goes through ``Client`` and its services, not backend/, ksm/ or services/."""
    assert _cli_reach(_graph(_modules())) == []


def test_the_graph_checks_catch_violations(tmp_path: Path) -> None:
    files = {
        "virtkit/__init__.py": "",
        "virtkit/errors.py": "",
        "virtkit/cloudinit.py": "from virtkit import errors\n",  # a submodule: fine
        "virtkit/ksm/__init__.py": "",
        "virtkit/ksm/service.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from virtkit.cli.main import x\n"
            "def tuner():\n    from virtkit.ksm.tuner import Tuner\n"
        ),
        "virtkit/ksm/tuner.py": "from virtkit.ksm import service\nfrom virtkit import Client\n",
        "virtkit/cli/__init__.py": "",
        "virtkit/cli/main.py": "from . import vm\n",
        "virtkit/cli/vm.py": (
            "import virtkit.cli.main\nfrom virtkit.ksm.tuner import lock_path\n"
            "from virtkit.errors import NotFound\n"
        ),
    }
    modules = []
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        modules.append((".".join(Path(name).with_suffix("").parts), path))
    imports = _graph(modules)
    assert sorted(_cycles(imports)) == [
        ["virtkit.cli.main", "virtkit.cli.vm", "virtkit.cli.main"],
        ["virtkit.ksm.service", "virtkit.ksm.tuner", "virtkit.ksm.service"],
    ]
    assert _from_root(imports) == ["virtkit.ksm.tuner:2: from virtkit import Client"]
    assert _cli_reach(imports) == ["virtkit.cli.vm:2 imports virtkit.ksm.tuner"]


def test_public_names_resolve_lazily() -> None:
    import virtkit

    assert set(virtkit.__all__) == {*virtkit._EXPORTS, "__version__"}
    for name in virtkit.__all__:
        assert getattr(virtkit, name) is not None
