"""Virtual networks as a user manages them: ``virtkit net ...``.

Kinds: ``nat`` (guests reach out through the host, masqueraded), ``route`` (routed, no NAT),
``isolated`` (guests and host only), ``open`` (libvirt adds no firewall rules), ``bridge`` (guests
join an existing host bridge) and ``macvtap`` (``direct``: guests share a host interface, in
bridge, vepa, private or passthrough mode). DHCP reservations and DNS host entries change live
(``virNetworkUpdate``), without restarting the network.
"""

from __future__ import annotations

import builtins
import ipaddress
import logging

from virtkit.backend.host import Host
from virtkit.errors import AlreadyExists, InUse, InvalidInput, InvalidState, NotFound, VirtkitError
from virtkit.specs import (
    DnsEntry,
    Lease,
    NetworkInfo,
    NetworkSpec,
    Reservation,
    validate_mac,
    validate_name,
)
from virtkit.xml.network import IP, DhcpHost, DhcpRange, DnsHost, ForwardInterface, Hostname
from virtkit.xml.network import Network as NetworkXML

log = logging.getLogger(__name__)
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def build_network(spec: NetworkSpec) -> NetworkXML:
    """The network XML for a spec (pure)."""
    net = NetworkXML()
    net.name = spec.name
    if spec.kind in ("nat", "route", "open"):
        net.forward_mode = spec.kind
        if spec.interface:
            net.forward_dev = spec.interface
    elif spec.kind == "bridge":
        net.forward_mode = "bridge"
        net.bridge_name = spec.bridge
    elif spec.kind == "macvtap":
        net.forward_mode = spec.mode
        iface = ForwardInterface()
        iface.dev = spec.interface
        net.forward_interfaces.append(iface)
    if spec.kind in ("nat", "route", "isolated", "open"):
        if spec.bridge:
            net.bridge_name = spec.bridge
        net.bridge_stp = "on"
        if spec.domain:
            net.domain_name = spec.domain
    if spec.ipv4:
        iface4 = ipaddress.ip_interface(spec.ipv4)
        ip = IP()
        ip.address = str(iface4.ip)
        ip.prefix = iface4.network.prefixlen
        dhcp = spec.ipv4_range()
        if dhcp:
            dhcp_range = DhcpRange()
            dhcp_range.start, dhcp_range.end = dhcp
            ip.dhcp_ranges.append(dhcp_range)
        net.ips.append(ip)
    if spec.ipv6:
        iface6 = ipaddress.ip_interface(spec.ipv6)
        ip6 = IP()
        ip6.family = "ipv6"
        ip6.address = str(iface6.ip)
        ip6.prefix = iface6.network.prefixlen
        if spec.dhcp6_start and spec.dhcp6_end:
            range6 = DhcpRange()
            range6.start, range6.end = spec.dhcp6_start, spec.dhcp6_end
            ip6.dhcp_ranges.append(range6)
        net.ips.append(ip6)
    return net


def _kind(net: NetworkXML) -> str:
    mode = net.forward_mode
    if mode is None:
        return "isolated"
    if mode in ("nat", "route", "open"):
        return mode
    if mode == "bridge" and not len(net.forward_interfaces):
        return "bridge"
    return "macvtap"


def _subnets(net: NetworkXML) -> list[IPNet]:
    found: list[IPNet] = []
    for ip in net.ips:
        if not ip.address:
            continue
        if ip.prefix is not None:
            found.append(ipaddress.ip_interface(f"{ip.address}/{ip.prefix}").network)
        elif ip.netmask:
            found.append(ipaddress.ip_interface(f"{ip.address}/{ip.netmask}").network)
    return found


class NetworkService:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.nets = host.networks

    def _xml(self, name: str, *, inactive: bool = False) -> NetworkXML:
        validate_name(name, "network")
        return NetworkXML.parse(self.nets.xml(name, inactive=inactive))

    # -- reading ------------------------------------------------------------------------------
    def users(self, name: str) -> builtins.list[str]:
        """VMs (running or defined) with a NIC on network ``name``."""
        users = []
        for guest in self.host.list_guests():
            try:
                for inactive in (False, True):
                    dom = guest.definition(inactive=inactive)
                    if any(i.type == "network" and i.source_network == name
                           for i in dom.interfaces):  # fmt: skip
                        users.append(dom.name or "?")
                        break
            except NotFound:
                continue
        return sorted(users)

    def list(self) -> builtins.list[NetworkInfo]:
        infos = []
        for name in self.nets.names():
            try:
                infos.append(self.get(name, with_users=False))
            except NotFound:
                continue  # removed meanwhile
        return infos

    def get(self, name: str, *, with_users: bool = True) -> NetworkInfo:
        net = self._xml(name)
        active, autostart, persistent = self.nets.state(name)
        ipv4 = ipv6 = None
        ranges: builtins.list[tuple[str, str]] = []
        reservations = []
        for ip in net.ips:
            if not ip.address:
                continue
            prefix = ip.prefix
            if prefix is None and ip.netmask:
                prefix = ipaddress.ip_network(f"0.0.0.0/{ip.netmask}").prefixlen
            text = f"{ip.address}/{prefix}"
            if ip.family == "ipv6":
                ipv6 = ipv6 or text
            else:
                ipv4 = ipv4 or text
            ranges += [(r.start or "", r.end or "") for r in ip.dhcp_ranges]
            reservations += [
                Reservation(mac=h.mac or "", ip=h.ip or "", name=h.name) for h in ip.dhcp_hosts
            ]
        forward = [i.dev for i in net.forward_interfaces if i.dev]
        return NetworkInfo(
            name=name, uuid=net.uuid, kind=_kind(net), active=active, autostart=autostart,
            persistent=persistent, bridge=net.bridge_name,
            interface=forward[0] if forward else net.forward_dev, ipv4=ipv4, ipv6=ipv6,
            dhcp_ranges=ranges, reservations=reservations,
            dns_hosts=[DnsEntry(ip=h.ip or "", hostnames=[n.value or "" for n in h.hostnames])
                       for h in net.dns_hosts],
            domain=net.domain_name, vms=self.users(name) if with_users else [],
        )  # fmt: skip

    def leases(self, name: str) -> builtins.list[Lease]:
        validate_name(name, "network")
        return [
            Lease(
                mac=str(lease.get("mac") or ""), ip=str(lease.get("ipaddr") or ""),
                prefix=int(lease.get("prefix") or 0), hostname=lease.get("hostname") or None,
                expires=int(lease.get("expirytime") or 0),
            )
            for lease in self.nets.leases(name)
        ]  # fmt: skip

    # -- creating -----------------------------------------------------------------------------
    def _check_host_device(self, device: str, what: str) -> None:
        """The bridge or interface must exist on the libvirt host (its network namespace)."""
        if not self.host.interface_exists(device):
            raise NotFound(
                f"the host has no {what} named {device!r}",
                code="host_interface_not_found",
                hint="list the host's interfaces with 'ip link' on the VM host",
            )

    def _check_overlap(self, spec: NetworkSpec) -> None:
        wanted: list[IPNet] = []
        for text in (spec.ipv4, spec.ipv6):
            if text:
                wanted.append(ipaddress.ip_interface(text).network)
        if not wanted:
            return
        for other in self.nets.names():
            try:
                theirs = _subnets(self._xml(other, inactive=True))
            except NotFound:
                continue
            for mine in wanted:
                for subnet in theirs:
                    if mine.version == subnet.version and mine.overlaps(subnet):
                        raise InvalidInput(
                            f"subnet {mine} overlaps {subnet} of network {other!r}",
                            code="subnet_overlap",
                        )

    def create(self, spec: NetworkSpec) -> NetworkInfo:
        """Define (and start, and mark autostart) a network; nothing is left if a step fails."""
        if self.nets.exists(spec.name):
            raise AlreadyExists(
                f"a network named {spec.name!r} already exists", code="network_exists"
            )
        if spec.kind == "bridge" and spec.bridge:
            self._check_host_device(spec.bridge, "bridge")
        if spec.kind == "macvtap" and spec.interface:
            self._check_host_device(spec.interface, "interface")
        if spec.kind in ("nat", "route") and spec.interface:
            self._check_host_device(spec.interface, "interface")
        self._check_overlap(spec)
        xml = build_network(spec).to_xml()
        try:
            self.nets.define(xml, start=spec.start, autostart=spec.autostart)
        except VirtkitError as exc:
            lowered = exc.message.lower()
            if "already in use by interface" in lowered or "in use by" in lowered:
                raise InvalidInput(
                    f"subnet of {spec.name!r} overlaps a network the host already uses: "
                    f"{exc.message}",
                    code="subnet_overlap",
                ) from exc
            raise
        log.info("created network %s (%s)", spec.name, spec.kind)
        return self.get(spec.name)

    # -- state --------------------------------------------------------------------------------
    def start(self, name: str) -> None:
        active, _, _ = self.nets.state(name)
        if active:
            raise InvalidState(f"network {name!r} is already running", code="network_active")
        self.nets.start(name)

    def stop(self, name: str) -> None:
        active, _, _ = self.nets.state(name)
        if not active:
            raise InvalidState(f"network {name!r} is not running", code="network_inactive")
        self.nets.stop(name)

    def set_autostart(self, name: str, on: bool) -> None:
        validate_name(name, "network")
        self.nets.set_autostart(name, on)

    def delete(self, name: str) -> None:
        """Stop and remove a network; refused while VMs have NICs on it (naming them)."""
        validate_name(name, "network")
        self.nets.state(name)  # NotFound first
        users = self.users(name)
        if users:
            raise InUse(
                f"network {name!r} is used by {', '.join(users)}: remove their NICs first "
                "('virtkit vm nic remove')",
                code="network_in_use",
            )
        self.nets.undefine(name)

    # -- live changes: reservations and DNS ---------------------------------------------------
    def _ipv4(self, name: str, ip: str) -> tuple[NetworkXML, IP]:
        net = self._xml(name, inactive=True)
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidInput(f"invalid IP address {ip!r}", code="invalid_ip") from None
        for block in net.ips:
            mask = block.prefix if block.prefix is not None else block.netmask
            if block.family in (None, "ipv4") and block.address and mask is not None:
                subnet = ipaddress.ip_interface(f"{block.address}/{mask}").network
                if address in subnet:
                    if (
                        address in (subnet.network_address, subnet.broadcast_address)
                        or str(address) == block.address
                    ):
                        raise InvalidInput(
                            f"{ip} is the network's own, network or broadcast address",
                            code="invalid_ip",
                        )
                    return net, block
        subnets = ", ".join(str(s) for s in _subnets(net)) or "none"
        raise InvalidInput(
            f"{ip} is outside the subnets of network {name!r} ({subnets})", code="ip_outside_subnet"
        )

    def reserve(self, name: str, mac: str, ip: str, hostname: str | None = None) -> Reservation:
        """A static DHCP lease: ``mac`` always gets ``ip``; applies live."""
        mac = validate_mac(mac)
        if hostname is not None:
            validate_name(hostname, "host name")
        _net, block = self._ipv4(name, ip)
        for host in block.dhcp_hosts:
            if (host.mac or "").lower() == mac:
                raise AlreadyExists(
                    f"{mac} already has a reservation on {name!r} ({host.ip})",
                    code="reservation_exists",
                )
            if host.ip == ip:
                raise AlreadyExists(
                    f"{ip} is already reserved on {name!r} for {host.mac}",
                    code="reservation_exists",
                )
        entry = DhcpHost()
        entry.mac, entry.ip = mac, ip
        if hostname:
            entry.name = hostname
        self.nets.update(name, "add", "dhcp-host", entry.to_xml())
        return Reservation(mac=mac, ip=ip, name=hostname)

    def unreserve(self, name: str, mac: str) -> Reservation:
        mac = validate_mac(mac)
        net = self._xml(name, inactive=True)
        for block in net.ips:
            for host in block.dhcp_hosts:
                if (host.mac or "").lower() == mac:
                    self.nets.update(name, "delete", "dhcp-host", host.to_xml())
                    return Reservation(mac=mac, ip=host.ip or "", name=host.name)
        raise NotFound(f"{mac} has no reservation on {name!r}", code="reservation_not_found")

    def dns_add(self, name: str, ip: str, hostnames: builtins.list[str]) -> DnsEntry:
        if not hostnames:
            raise InvalidInput("give at least one host name", code="invalid_hostname")
        for hostname in hostnames:
            validate_name(hostname, "host name")
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidInput(f"invalid IP address {ip!r}", code="invalid_ip") from None
        net = self._xml(name, inactive=True)
        for host in net.dns_hosts:
            if host.ip == ip:
                raise AlreadyExists(
                    f"{ip} already has a DNS entry on {name!r}", code="dns_entry_exists"
                )
        entry = DnsHost()
        entry.ip = ip
        for hostname in hostnames:
            item = Hostname()
            item.value = hostname
            entry.hostnames.append(item)
        self.nets.update(name, "add", "dns-host", entry.to_xml())
        return DnsEntry(ip=ip, hostnames=hostnames)

    def dns_remove(self, name: str, ip: str) -> None:
        net = self._xml(name, inactive=True)
        for host in net.dns_hosts:
            if host.ip == ip:
                self.nets.update(name, "delete", "dns-host", host.to_xml())
                return
        raise NotFound(f"{ip} has no DNS entry on {name!r}", code="dns_entry_not_found")
