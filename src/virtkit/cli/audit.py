"""``virtkit audit``: the audit log of changes made through the CLI and the API."""

from __future__ import annotations

import click

from virtkit.cli import render
from virtkit.cli.state import State, json_option, pass_state
from virtkit.cli.user import print_json, when


@click.command("audit")
@click.option("--user", "who", help="Only this user's entries (e.g. alice, local:root).")
@click.option("--action", help="Only actions starting so (e.g. 'user', 'POST /api/v1/vms').")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
@pass_state
def audit(state: State, who: str | None, action: str | None, limit: int, as_json: bool) -> None:
    """Show the audit log: who changed what, when, and the result; newest first."""
    entries = state.client.audit.entries(user=who, action=action, limit=limit)
    if as_json:
        print_json(entries)
        return
    render.table(
        ["WHEN", "USER", "ACTION", "TARGET", "RESULT", "SOURCE"],
        [[when(e.at), e.user, e.action, e.target, e.result, e.source or "-"] for e in entries],
    )
