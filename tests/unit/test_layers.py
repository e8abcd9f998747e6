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


def test_public_names_resolve_lazily() -> None:
    import virtkit

    assert set(virtkit.__all__) == {*virtkit._EXPORTS, "__version__"}
    for name in virtkit.__all__:
        assert getattr(virtkit, name) is not None
