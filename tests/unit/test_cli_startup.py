"""The CLI starts fast: ``--help`` lists the command groups from a static table without importing
them, and no help screen of ``virtkit`` or ``virtkit vm`` imports the heavy libraries."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from virtkit.cli.main import COMMANDS, cli

HEAVY = ("pydantic", "libvirt", "yaml", "numpy", "matplotlib")


def _modules_after(*args: str) -> set[str]:
    code = (
        "import sys, json\n"
        "from virtkit.cli.main import main\n"
        "try:\n"
        f"    main({list(args)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr.write(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(proc.stderr))


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("vm", "--help"),
        ("vm", "disk", "--help"),
        ("doctor", "--help"),
        ("diag", "--help"),
        ("tune", "--help"),
    ],
)
def test_help_imports_no_heavy_library(args: tuple[str, ...]) -> None:
    loaded = _modules_after(*args)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == [], f"virtkit {' '.join(args)} imports {heavy}"


def test_top_help_imports_no_command_group() -> None:
    loaded = _modules_after("--help")
    groups = {module for module, _attr, _help in COMMANDS.values()}
    assert groups & loaded == set()


def test_the_static_table_matches_the_commands() -> None:
    ctx = click.Context(cli)
    for name, (module, attr, short) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attr)
        assert command.name == name
        assert cli.get_command(ctx, name) is command
        first_paragraph = " ".join((command.help or "").split("\n\n")[0].split())
        assert short == first_paragraph, f"COMMANDS[{name!r}]: update its short help"


def test_every_command_group_is_listed() -> None:
    result = CliRunner().invoke(cli, ["--help"], terminal_width=100)
    assert result.exit_code == 0
    listed = result.output.split("Commands:")[1]
    for name in COMMANDS:
        assert f"\n  {name} " in listed
