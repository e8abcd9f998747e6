"""``virtkit dev ...``: helpers for development, demos and tests."""

from __future__ import annotations

import json

import click

from virtkit.cli.state import State, pass_state


@click.group()
def dev() -> None:
    """Development helpers (the tiny test guest)."""


@dev.command("tiny-guest")
@click.option("--kernel", help="Kernel to use (default: the cloud kernel in /boot).")
@pass_state
def tiny_guest(state: State, kernel: str | None) -> None:
    """Build (or reuse) the tiny busybox guest; print its kernel, initrd and cmdline as JSON."""
    from virtkit.services.tinyguest import build_tiny_guest
    from virtkit.settings import Settings

    guest = build_tiny_guest(Settings.load().cache_dir, kernel=kernel)
    click.echo(json.dumps(guest.to_dict(), indent=2))
