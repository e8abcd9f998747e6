"""``virtkit net ...``: virtual networks, DHCP reservations, DNS entries, leases."""

from __future__ import annotations

import time
from typing import Any

import click

from virtkit.cli import render
from virtkit.cli.state import State, json_option, pass_state
from virtkit.specs import NetworkInfo, NetworkSpec, parse_model


@click.group("net")
def net() -> None:
    """Virtual networks: NAT, routed, isolated, open, bridged, macvtap."""


@net.command("list")
@json_option
@pass_state
def net_list(state: State, as_json: bool) -> None:
    """List networks: kind, state, bridge, subnets."""
    nets = state.client.networks.list()
    if as_json:
        render.print_json(nets)
        return
    render.table(
        ["NAME", "KIND", "STATE", "AUTOSTART", "BRIDGE", "IPV4", "IPV6"],
        [[n.name, n.kind, "active" if n.active else "inactive", "yes" if n.autostart else "no",
          n.bridge or n.interface or "-", n.ipv4 or "-", n.ipv6 or "-"] for n in nets],
    )  # fmt: skip


def _show(info: NetworkInfo) -> None:
    render.fields([
        ("Name", info.name), ("Kind", info.kind),
        ("State", "active" if info.active else "inactive"),
        ("Autostart", "yes" if info.autostart else "no"),
        ("Bridge", info.bridge or "-"), ("Interface", info.interface or "-"),
        ("IPv4", info.ipv4 or "-"), ("IPv6", info.ipv6 or "-"),
        ("DHCP", ", ".join(f"{a}-{b}" for a, b in info.dhcp_ranges) or "-"),
        ("Domain", info.domain or "-"), ("VMs", ", ".join(info.vms) or "-"),
    ])  # fmt: skip
    if info.reservations:
        click.echo("Reservations:")
        render.table(["MAC", "IP", "NAME"],
                     [[r.mac, r.ip, r.name or "-"] for r in info.reservations])  # fmt: skip
    if info.dns_hosts:
        click.echo("DNS hosts:")
        render.table(["IP", "NAMES"], [[d.ip, " ".join(d.hostnames)] for d in info.dns_hosts])


@net.command("show")
@click.argument("name")
@json_option
@pass_state
def net_show(state: State, name: str, as_json: bool) -> None:
    """A network: kind, subnets, DHCP, reservations, DNS entries, the VMs on it."""
    info = state.client.networks.get(name)
    if as_json:
        render.print_json(info)
    else:
        _show(info)


@net.command("create")
@click.argument("name")
@click.option(
    "--kind", type=click.Choice(["nat", "route", "isolated", "open", "bridge", "macvtap"]),
    default="nat", show_default=True, help="What the network is.",
)  # fmt: skip
@click.option("--ipv4", help="Host address and prefix, e.g. 198.18.1.1/24.")
@click.option("--dhcp-start", help="First DHCP address (default: after the host's).")
@click.option("--dhcp-end", help="Last DHCP address.")
@click.option("--no-dhcp", is_flag=True, help="No DHCP server.")
@click.option("--ipv6", help="Host IPv6 address and prefix, e.g. fd00:1::1/64.")
@click.option("--dhcp6-start", help="First DHCPv6 address.")
@click.option("--dhcp6-end", help="Last DHCPv6 address.")
@click.option("--bridge", help="bridge kind: the host bridge to join; else the bridge's name.")
@click.option("--interface", help="macvtap: the host interface; nat/route: the uplink.")
@click.option(
    "--mode", type=click.Choice(["bridge", "vepa", "private", "passthrough"]), default="bridge",
    show_default=True, help="macvtap mode.",
)  # fmt: skip
@click.option("--domain", help="DNS domain.")
@click.option("--no-autostart", is_flag=True, help="Do not start it with the host.")
@click.option("--no-start", is_flag=True, help="Define it only.")
@json_option
@pass_state
def net_create(state: State, /, name: str, **opts: Any) -> None:
    """Create a network (and start it, and mark it autostart)."""
    as_json = opts.pop("as_json")
    data = {k: v for k, v in opts.items() if v is not None and k not in
            ("no_dhcp", "no_autostart", "no_start")}  # fmt: skip
    data.update(name=name, dhcp=not opts["no_dhcp"], autostart=not opts["no_autostart"],
                start=not opts["no_start"])  # fmt: skip
    spec = parse_model(NetworkSpec, data, "network")
    info = state.client.networks.create(spec)
    if as_json:
        render.print_json(info)
    else:
        click.echo(f"network {info.name} created ({info.kind}" +
                   (f", {info.ipv4}" if info.ipv4 else "") + ")")  # fmt: skip


@net.command("start")
@click.argument("name")
@pass_state
def net_start(state: State, name: str) -> None:
    """Start a network."""
    state.client.networks.start(name)
    click.echo(f"network {name} started")


@net.command("stop")
@click.argument("name")
@pass_state
def net_stop(state: State, name: str) -> None:
    """Stop a network (its VMs lose connectivity until it starts again)."""
    state.client.networks.stop(name)
    click.echo(f"network {name} stopped")


@net.command("autostart")
@click.argument("name")
@click.option("--off", is_flag=True, help="Do not start it with the host.")
@pass_state
def net_autostart(state: State, name: str, off: bool) -> None:
    """Start a network with the host (or not, with --off)."""
    state.client.networks.set_autostart(name, not off)
    click.echo(f"network {name}: autostart {'off' if off else 'on'}")


@net.command("delete")
@click.argument("name")
@pass_state
def net_delete(state: State, name: str) -> None:
    """Stop and remove a network (refused while VMs have NICs on it)."""
    state.client.networks.delete(name)
    click.echo(f"network {name} deleted")


@net.command("reserve")
@click.argument("name")
@click.option("--mac", required=True, help="The guest NIC's MAC.")
@click.option("--ip", required=True, help="The address it always gets.")
@click.option("--name", "hostname", help="Host name for the lease.")
@pass_state
def net_reserve(state: State, name: str, mac: str, ip: str, hostname: str | None) -> None:
    """Reserve an address for a MAC (DHCP static lease); applies live."""
    r = state.client.networks.reserve(name, mac, ip, hostname)
    click.echo(f"{r.mac} -> {r.ip} reserved on {name} (from the guest's next DHCP request)")


@net.command("unreserve")
@click.argument("name")
@click.option("--mac", required=True)
@pass_state
def net_unreserve(state: State, name: str, mac: str) -> None:
    """Remove a MAC's reservation; applies live."""
    r = state.client.networks.unreserve(name, mac)
    click.echo(f"reservation {r.mac} -> {r.ip} removed from {name}")


@net.command("dns-add")
@click.argument("name")
@click.option("--ip", required=True)
@click.option("--hostname", "hostnames", multiple=True, required=True, help="Repeatable.")
@pass_state
def net_dns_add(state: State, name: str, ip: str, hostnames: tuple[str, ...]) -> None:
    """Add a DNS host entry to the network's DNS server; applies live."""
    entry = state.client.networks.dns_add(name, ip, list(hostnames))
    click.echo(f"{' '.join(entry.hostnames)} -> {entry.ip} on {name}")


@net.command("dns-remove")
@click.argument("name")
@click.option("--ip", required=True)
@pass_state
def net_dns_remove(state: State, name: str, ip: str) -> None:
    """Remove the DNS host entry of an address; applies live."""
    state.client.networks.dns_remove(name, ip)
    click.echo(f"DNS entry {ip} removed from {name}")


@net.command("leases")
@click.argument("name")
@json_option
@pass_state
def net_leases(state: State, name: str, as_json: bool) -> None:
    """The network's current DHCP leases."""
    leases = state.client.networks.leases(name)
    if as_json:
        render.print_json(leases)
        return
    render.table(
        ["MAC", "IP", "HOSTNAME", "EXPIRES"],
        [[le.mac, f"{le.ip}/{le.prefix}", le.hostname or "-",
          time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(le.expires)) if le.expires else "never"]
         for le in leases],
    )  # fmt: skip
