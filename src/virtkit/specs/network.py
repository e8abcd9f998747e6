"""Virtual networks (spec, info, reservations, DNS, leases) and a VM's NICs (spec, info,
guest addresses)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from virtkit.errors import InvalidInput
from virtkit.specs.common import _Spec, _View, as_rule_error, name_rule, parse_model

NetworkKind = Literal["nat", "route", "isolated", "open", "bridge", "macvtap"]
MacvtapMode = Literal["bridge", "vepa", "private", "passthrough"]
NicModel = Literal["virtio", "e1000e", "e1000", "rtl8139"]
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def validate_mac(mac: str) -> str:
    """A unicast MAC address in lower case, or :class:`InvalidInput`."""
    value = mac.strip().lower().replace("-", ":")
    if not _MAC.match(value):
        raise InvalidInput(
            f"invalid MAC address {mac!r}: expected six hex pairs like 52:54:00:12:34:56",
            code="invalid_mac",
        )
    if int(value[:2], 16) & 1:
        raise InvalidInput(
            f"MAC address {mac!r} is a multicast address: the first byte must be even",
            code="invalid_mac",
        )
    return value


NetworkName = Annotated[str, name_rule("network")]


def _interface(
    value: str, family: int, what: str
) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(
            f"{what} {value!r} is not an address with a prefix like "
            + ("198.18.1.1/24" if family == 4 else "fd00:1::1/64")
        ) from None
    if iface.version != family:
        raise ValueError(f"{what} {value!r} is not an IPv{family} address")
    if "/" not in value:
        raise ValueError(f"{what} {value!r} needs a prefix length (like /24)")
    net = iface.network
    if family == 4 and net.prefixlen > 30:
        raise ValueError(f"{what} {value!r}: a /{net.prefixlen} leaves no room for guests")
    if iface.ip in (net.network_address, net.broadcast_address) and net.num_addresses > 2:
        raise ValueError(
            f"{what} {value!r}: the host address cannot be the subnet's network or broadcast "
            "address"
        )
    return iface


class NetworkSpec(_Spec):
    """A virtual network (see docs/networking.md for each kind)."""

    name: NetworkName
    kind: NetworkKind = Field("nat", description="nat, route, isolated, open, bridge, macvtap.")
    ipv4: str | None = Field(None, description="The host's address and prefix: 198.18.1.1/24.")
    dhcp: bool = Field(True, description="Serve DHCP on the IPv4 subnet.")
    dhcp_start: str | None = Field(None, description="First DHCP address (default: host + 1).")
    dhcp_end: str | None = Field(None, description="Last DHCP address (default: the last one).")
    ipv6: str | None = Field(None, description="The host's IPv6 address and prefix: fd00:1::1/64.")
    dhcp6_start: str | None = Field(None, description="First DHCPv6 address (optional).")
    dhcp6_end: str | None = Field(None, description="Last DHCPv6 address.")
    bridge: str | None = Field(
        None, description="bridge kind: an existing host bridge; others: the bridge to create."
    )
    interface: str | None = Field(
        None, description="macvtap: the host interface; nat/route: the uplink (optional)."
    )
    mode: MacvtapMode = Field("bridge", description="macvtap mode.")
    domain: str | None = Field(None, description="DNS domain of the network.")
    autostart: bool = True
    start: bool = True

    @model_validator(mode="after")
    def _shape(self) -> NetworkSpec:
        routed = self.kind in ("nat", "route", "isolated", "open")
        if self.kind in ("nat", "route", "open") and not (self.ipv4 or self.ipv6):
            raise ValueError(f"a {self.kind} network needs an IPv4 or IPv6 subnet (ipv4: ...)")
        if self.kind == "bridge" and not self.bridge:
            raise ValueError("a bridge network needs the host bridge to join (bridge: br0)")
        if self.kind == "macvtap" and not self.interface:
            raise ValueError("a macvtap network needs the host interface (interface: eth0)")
        if not routed and (self.ipv4 or self.ipv6):
            raise ValueError(
                f"a {self.kind} network has no subnet of its own: the guests are on the host's "
                "LAN (drop ipv4/ipv6)"
            )
        if self.ipv4:
            iface = _interface(self.ipv4, 4, "ipv4")
            self._check_range(iface, self.dhcp_start, self.dhcp_end, "dhcp")
        elif self.dhcp_start or self.dhcp_end:
            raise ValueError("a DHCP range needs an ipv4 subnet")
        if self.ipv6:
            iface6 = _interface(self.ipv6, 6, "ipv6")
            if iface6.network.prefixlen != 64 and (self.dhcp6_start or self.dhcp6_end):
                raise ValueError("DHCPv6 in libvirt networks needs a /64 prefix")
            self._check_range(iface6, self.dhcp6_start, self.dhcp6_end, "dhcp6", default=False)
        elif self.dhcp6_start or self.dhcp6_end:
            raise ValueError("a DHCPv6 range needs an ipv6 subnet")
        return self

    def _check_range(
        self,
        iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
        start: str | None,
        end: str | None,
        what: str,
        default: bool = True,
    ) -> None:
        if bool(start) != bool(end):
            raise ValueError(f"a {what} range needs both {what}_start and {what}_end")
        if not start or not end:
            return
        try:
            first, last = ipaddress.ip_address(start), ipaddress.ip_address(end)
        except ValueError as exc:
            raise ValueError(f"{what} range: {exc}") from None
        net = iface.network
        for label, addr in (("start", first), ("end", last)):
            if addr not in net:
                raise ValueError(f"{what}_{label} {addr} is outside the subnet {net}")
            if addr in (net.network_address, net.broadcast_address):
                raise ValueError(f"{what}_{label} {addr} is the subnet's network/broadcast address")
        if int(first) > int(last):
            raise ValueError(f"{what} range {first}-{last} is reversed (start after end)")
        if int(first) <= int(iface.ip) <= int(last):
            raise ValueError(f"{what} range {first}-{last} holds the host's own address {iface.ip}")

    def ipv4_range(self) -> tuple[str, str] | None:
        """The DHCP range: given, or from the address after the host's to the last usable."""
        if not self.ipv4 or not self.dhcp:
            return None
        if self.dhcp_start and self.dhcp_end:
            return self.dhcp_start, self.dhcp_end
        iface = ipaddress.ip_interface(self.ipv4)
        net = iface.network
        first, last, host = (
            int(net.network_address) + 1,
            int(net.broadcast_address) - 1,
            int(iface.ip),
        )
        start, end = (host + 1, last) if host < last else (first, host - 1)
        return str(ipaddress.ip_address(start)), str(ipaddress.ip_address(end))


def parse_network_spec(data: Any, source: str = "network spec") -> NetworkSpec:
    return parse_model(NetworkSpec, data, source)


class NicSpec(_Spec):
    """A NIC of a new VM: on a virtual network, a host bridge, a host interface (macvtap), or
    QEMU's user-mode network (no host network touched; ``ssh_forward`` maps a port on
    127.0.0.1 to the guest's SSH)."""

    network: str | None = Field(None, description="A virtual network.")
    bridge: str | None = Field(None, description="A host bridge.")
    direct: str | None = Field(None, description="A host interface (macvtap).")
    user: bool = Field(False, description="QEMU user-mode networking (guest isolated).")
    ssh_forward: int | None = Field(
        None, ge=1, le=65535, description="user: this port on 127.0.0.1 reaches the guest's SSH."
    )
    mode: MacvtapMode = Field("bridge", description="macvtap mode (with direct).")
    mac: str | None = Field(None, description="MAC address; default: a new unique 52:54:00 one.")
    model: NicModel = Field("virtio", description="virtio, e1000e, e1000 or rtl8139.")

    @model_validator(mode="after")
    def _one(self) -> NicSpec:
        if len([x for x in (self.network, self.bridge, self.direct, self.user) if x]) != 1:
            raise ValueError("a NIC needs exactly one of network, bridge, direct or user")
        if self.ssh_forward is not None and not self.user:
            raise ValueError("ssh_forward goes with user-mode networking (user: true)")
        if self.mac is not None:
            try:
                self.mac = validate_mac(self.mac)
            except InvalidInput as exc:
                raise as_rule_error(exc) from None
        return self


class Reservation(_View):
    mac: str
    ip: str
    name: str | None = None


class DnsEntry(_View):
    ip: str
    hostnames: list[str]


class NetworkInfo(_View):
    name: str
    uuid: str | None
    kind: str
    active: bool
    autostart: bool
    persistent: bool
    bridge: str | None
    interface: str | None = None
    ipv4: str | None = None
    ipv6: str | None = None
    dhcp_ranges: list[tuple[str, str]] = Field(default_factory=list)
    reservations: list[Reservation] = Field(default_factory=list)
    dns_hosts: list[DnsEntry] = Field(default_factory=list)
    domain: str | None = None
    vms: list[str] = Field(default_factory=list, description="VMs with a NIC on it.")


class Lease(_View):
    mac: str
    ip: str
    prefix: int
    hostname: str | None
    expires: int = Field(description="Unix time the lease expires (0: never).")


class NicInfo(_View):
    mac: str
    type: str = Field(description="network, bridge, direct (macvtap) or user.")
    source: str | None = Field(None, description="The network, bridge or host interface.")
    model: str | None
    link: str = Field(description="up or down.")
    target: str | None = Field(None, description="The host-side device (vnet0) while running.")


class GuestAddress(_View):
    mac: str
    ip: str
    prefix: int
    source: str = Field(description="lease, agent or arp: which source answered.")
    interface: str | None = Field(None, description="Guest interface (agent) or host device.")
