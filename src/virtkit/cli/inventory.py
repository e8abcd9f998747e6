"""``virtkit inventory``: Ansible's dynamic inventory of the host's VMs."""

from __future__ import annotations

import json

import click

from virtkit.cli.state import State, pass_state


@click.command()
@click.option("--list", "listing", is_flag=True, help="Every group and host (the default).")
@click.option("--host", "host", metavar="NAME", help="One VM's variables.")
@click.option("--indent", type=int, default=None, help="Pretty-print JSON with this indent.")
@pass_state
def inventory(state: State, listing: bool, host: str | None, indent: int | None) -> None:
    """Ansible dynamic inventory of the VMs: groups from tags, host, state, template, OS.

    `ansible -i SCRIPT` runs a script calling `virtkit inventory "$@"`; the inventory plugin
    (contrib/ansible/inventory_plugins/virtkit.py, with a `plugin: virtkit` YAML file) reads
    the same. Hosts carry ansible_host/port/user and ssh arguments pinning the host keys
    virtkit made (docs/ansible.md).
    """
    if listing and host:
        raise click.UsageError("--list and --host NAME exclude each other")
    service = state.client.inventory
    found = service.host_vars(host) if host else service.build().ansible()
    click.echo(json.dumps(found, indent=indent, sort_keys=True))
