"""``virtkit vm nic ...`` and ``virtkit vm ip``: a VM's network interfaces and addresses."""

from __future__ import annotations

import json

import click

from virtkit.cli import render
from virtkit.cli.state import HostAwareGroup, State, json_option, pass_state


@click.group(cls=HostAwareGroup)
def nic() -> None:
    """A VM's network interfaces: list, add (hot-plug), remove, link up/down."""


@nic.command("list")
@click.argument("name")
@json_option
@pass_state
def nic_list(state: State, name: str, as_json: bool) -> None:
    """The VM's NICs: MAC, kind, network or bridge, model, link, host device."""
    nics = state.client.nics.list(name)
    if as_json:
        render.print_json(nics)
        return
    render.table(
        ["MAC", "TYPE", "SOURCE", "MODEL", "LINK", "DEVICE"],
        [[n.mac, n.type, n.source or "-", n.model or "-", n.link, n.target or "-"] for n in nics],
    )


@nic.command("add")
@click.argument("name")
@click.option("--network", help="A virtual network.")
@click.option("--bridge", help="A host bridge.")
@click.option("--direct", help="A host interface (macvtap).")
@click.option(
    "--mode", type=click.Choice(["bridge", "vepa", "private", "passthrough"]), default="bridge",
    help="macvtap mode (with --direct).",
)  # fmt: skip
@click.option("--mac", help="MAC address (default: a new one in 52:54:00:xx:xx:xx).")
@click.option(
    "--model", default="virtio", show_default=True, help="virtio, e1000e, e1000, rtl8139."
)
@pass_state
def nic_add(state: State, name: str, network: str | None, bridge: str | None,
            direct: str | None, mode: str, mac: str | None, model: str) -> None:  # fmt: skip
    """Add a NIC (hot-plugged into a running VM, kept in its definition)."""
    info = state.client.nics.add(
        name, network=network, bridge=bridge, direct=direct, mode=mode, mac=mac, model=model
    )
    click.echo(f"NIC {info.mac} added to {name} ({info.type} {info.source})")


@nic.command("remove")
@click.argument("name")
@click.argument("mac")
@pass_state
def nic_remove(state: State, name: str, mac: str) -> None:
    """Remove the NIC with this MAC (hot-unplug on a running VM)."""
    state.client.nics.remove(name, mac)
    click.echo(f"NIC {mac} removed from {name}")


@nic.command("set-link")
@click.argument("name")
@click.argument("mac")
@click.argument("state_", metavar="up|down", type=click.Choice(["up", "down"]))
@pass_state
def nic_set_link(state: State, name: str, mac: str, state_: str) -> None:
    """Plug (up) or pull (down) the NIC's virtual cable."""
    info = state.client.nics.set_link(name, mac, state_ == "up")
    click.echo(f"NIC {info.mac} of {name}: link {info.link}")


@click.command("ip")
@click.argument("names", nargs=-1)
@json_option
@pass_state
def ip(state: State, names: tuple[str, ...], as_json: bool) -> None:
    """Guest IP addresses (of the VMs named, or of every running VM), and which source answered:
    DHCP lease, guest agent or the host's neighbour table (arp)."""
    if len(names) == 1:
        found = {names[0]: state.client.nics.ip(names[0])}
    else:
        found = state.client.nics.addresses(list(names) or None)
    if as_json:
        click.echo(json.dumps({n: [a.model_dump() for a in addrs] for n, addrs in found.items()},
                              indent=2))  # fmt: skip
        return
    render.table(
        ["NAME", "MAC", "ADDRESS", "SOURCE"],
        [[n, a.mac, f"{a.ip}/{a.prefix}", a.source] for n, addrs in found.items() for a in addrs],
    )
