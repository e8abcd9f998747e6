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
    guest = state.client.tiny_guest(kernel=kernel)
    click.echo(json.dumps(guest.to_dict(), indent=2))
