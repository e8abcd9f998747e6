"""The architecture as a test: only backend/ imports libvirt; imports point down the layers."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "virtkit"

# Lower numbers are lower layers; a module may import its own layer and those below.
LAYERS = {
    "errors": 0,
    "specs": 0,
    "_version": 0,
    "settings": 0,
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
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        out.append((".".join(rel.parts), path))
    return out


def test_every_module_is_in_a_known_layer() -> None:
    unknown = {_layer(m) for m, _ in _modules()} - set(LAYERS)
    assert not unknown, f"add these to LAYERS (and docs/architecture.md): {unknown}"


def test_only_backend_imports_libvirt() -> None:
    offenders = [
        m
        for m, path in _modules()
        if _layer(m) != "backend"
        and any(i == "libvirt" or i.startswith("libvirt.") for i in _imports(path))
    ]
    assert offenders == []


def test_imports_point_down() -> None:
    violations = []
    for module, path in _modules():
        mine = LAYERS[_layer(module)]
        for imported in _imports(path):
            if not imported.startswith("virtkit.") or _layer(module) == "__init__":
                continue
            theirs = LAYERS.get(_layer(imported), 99)
            if theirs > mine:
                violations.append(f"{module} imports {imported}")
    assert violations == []


def test_the_check_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import libvirt\nfrom virtkit.cli.main import cli\n")
    assert _imports(bad) == ["libvirt", "virtkit.cli.main"]
    assert LAYERS[_layer("virtkit.cli.main")] > LAYERS[_layer("virtkit.services.vms")]


def test_public_names_resolve_lazily() -> None:
    import virtkit

    assert set(virtkit.__all__) == {*virtkit._EXPORTS, "__version__"}
    for name in virtkit.__all__:
        assert getattr(virtkit, name) is not None
