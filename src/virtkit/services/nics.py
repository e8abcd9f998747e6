"""A VM's network interfaces: list, add (hot-plug), remove, link up/down; and its IP addresses.

MACs are generated in QEMU's 52:54:00 range and are unique across every VM of the host (running
or defined). Guest addresses come from three sources, and each answer says which one gave it:
the host's DHCP leases (dnsmasq, for virtual networks), the guest agent (when the VM has one),
and the host's neighbour table (ARP, for bridged guests). A lease from before the VM's current
boot is not reported as current.
"""

from __future__ import annotations

import builtins
import ipaddress
import logging
import secrets
import time

from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.backend.procfs import neighbours, process_uptime, qemu_pids
from virtkit.errors import InvalidInput, InvalidState, NotFound, Unsupported, VirtkitError
from virtkit.specs import GuestAddress, NicInfo, validate_mac, validate_name
from virtkit.xml.domain import Domain, Interface

log = logging.getLogger(__name__)
MODELS = ("virtio", "e1000e", "e1000", "rtl8139")
DEFAULT_LEASE = 3600  # dnsmasq's lease time when the network does not set one


def _nic_info(iface: Interface) -> NicInfo:
    source = iface.source_network or iface.source_bridge or iface.source_dev
    return NicInfo(
        mac=(iface.mac or "").lower(), type=iface.type or "?", source=source, model=iface.model,
        link=iface.link_state or "up", target=iface.target_dev,
    )  # fmt: skip


def macs_in_use(host: Host) -> set[str]:
    """Every MAC of every VM on the host, running or defined."""
    macs: set[str] = set()
    for guest in host.list_guests():
        try:
            for inactive in (False, True):
                dom = guest.definition(inactive=inactive)
                macs |= {(i.mac or "").lower() for i in dom.interfaces if i.mac}
        except NotFound:
            continue
    return macs


def new_mac(taken: set[str]) -> str:
    """A random MAC in QEMU's 52:54:00 range that is not in ``taken``."""
    while True:
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        if mac not in taken:
            return mac


def _is_address(text: str) -> bool:
    """Only real addresses: what a guest agent reports is the guest's word, unchecked."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _user_nics(dom: Domain) -> builtins.list[NicInfo]:
    """User-mode NICs virtkit passed to QEMU directly (libvirt does not list them)."""
    values = [a.value or "" for a in dom.qemu_args]
    forwards = {v.split("id=", 1)[1].split(",", 1)[0]: v for v in values
                if v.startswith("user,") and "id=" in v}  # fmt: skip
    found = []
    for value in values:
        if not value.startswith("virtio-net-pci,") or "netdev=" not in value:
            continue
        opts = dict(item.partition("=")[::2] for item in value.split(",")[1:])
        netdev = forwards.get(opts.get("netdev", ""), "")
        source = "user"
        if "hostfwd=tcp:" in netdev:
            source = "user, ssh on " + netdev.split("hostfwd=tcp:", 1)[1].split("-", 1)[0]
        found.append(NicInfo(mac=opts.get("mac", "").lower(), type="user", source=source,
                             model="virtio", link="up", target=None))  # fmt: skip
    return found


class NicService:
    def __init__(self, host: Host) -> None:
        self.host = host

    def _guest(self, name: str) -> tuple[Guest, Domain, Domain | None]:
        validate_name(name)
        guest = self.host.lookup(name)
        return (guest, *guest.definitions())

    def list(self, name: str) -> builtins.list[NicInfo]:
        _guest, config, live = self._guest(name)
        dom = live or config
        return [_nic_info(i) for i in dom.interfaces] + _user_nics(dom)

    def macs_in_use(self) -> set[str]:
        return macs_in_use(self.host)

    def new_mac(self) -> str:
        return new_mac(self.macs_in_use())

    def add(
        self,
        name: str,
        *,
        network: str | None = None,
        bridge: str | None = None,
        direct: str | None = None,
        mode: str = "bridge",
        mac: str | None = None,
        model: str = "virtio",
    ) -> NicInfo:
        """Add a NIC on a virtual network, a host bridge, or a host interface (macvtap);
        hot-plugged into a running VM and kept in its definition."""
        chosen = [x for x in (network, bridge, direct) if x]
        if len(chosen) != 1:
            raise InvalidInput(
                "give exactly one of a network, a bridge or a host interface (direct)",
                code="invalid_nic",
            )
        if model not in MODELS:
            raise InvalidInput(
                f"unknown NIC model {model!r} (known: {', '.join(MODELS)})", code="invalid_nic"
            )
        guest, _config, live = self._guest(name)
        if mac is not None:
            mac = validate_mac(mac)
            if mac in self.macs_in_use():
                raise InvalidInput(
                    f"MAC {mac} is already used by a VM on this host", code="mac_in_use"
                )
        else:
            mac = self.new_mac()
        iface = Interface()
        iface.mac = mac  # first, as libvirt writes it
        if network:
            validate_name(network, "network")
            self.host.networks.state(network)  # NotFound: "no network named ..."
            iface.type, iface.source_network = "network", network
        elif bridge:
            if not self.host.interface_exists(bridge):
                raise NotFound(
                    f"the host has no bridge named {bridge!r}", code="host_interface_not_found"
                )
            iface.type, iface.source_bridge = "bridge", bridge
        else:
            assert direct is not None
            if not self.host.interface_exists(direct):
                raise NotFound(
                    f"the host has no interface named {direct!r}", code="host_interface_not_found"
                )
            iface.type, iface.source_dev, iface.source_mode = "direct", direct, mode
        iface.model = model
        guest.attach_device(iface.to_xml(), live=live is not None, config=guest.is_persistent())
        log.info("added NIC %s to %s", mac, name)
        return next(n for n in self.list(name) if n.mac == mac)

    def _find(self, dom: Domain | None, mac: str) -> Interface | None:
        if dom is None:
            return None
        return next((i for i in dom.interfaces if (i.mac or "").lower() == mac), None)

    def remove(self, name: str, mac: str, timeout: float = 10.0) -> None:
        mac = validate_mac(mac)
        guest, config, live = self._guest(name)
        in_live, in_config = self._find(live, mac), self._find(config, mac)
        if in_live is None and in_config is None:
            raise NotFound(f"VM {name!r} has no NIC with MAC {mac}", code="nic_not_found")
        found = in_live or in_config
        assert found is not None
        guest.detach_device(
            found.to_xml(), live=in_live is not None,
            config=in_config is not None and guest.is_persistent(),
        )  # fmt: skip
        if in_live is not None:
            deadline = time.monotonic() + timeout
            while self._find(guest.definition(), mac) is not None:
                if time.monotonic() > deadline:
                    raise InvalidState(
                        f"the guest did not release NIC {mac} within {timeout:.0f} s (it is "
                        "removed from the definition; it goes at the next start)",
                        code="detach_timeout",
                    )
                time.sleep(0.1)

    def set_link(self, name: str, mac: str, up: bool) -> NicInfo:
        """Link up or down, as if the cable were plugged or pulled (live and in the definition)."""
        mac = validate_mac(mac)
        guest, config, live = self._guest(name)
        iface = self._find(live, mac) or self._find(config, mac)
        if iface is None:
            raise NotFound(f"VM {name!r} has no NIC with MAC {mac}", code="nic_not_found")
        iface.link_state = "up" if up else "down"
        guest.update_device(
            iface.to_xml(), live=live is not None,
            config=guest.is_persistent() and self._find(config, mac) is not None,
        )  # fmt: skip
        return next(n for n in self.list(name) if n.mac == mac)

    # -- addresses ----------------------------------------------------------------------------
    def _started(self, uuids: builtins.list[str]) -> dict[str, float]:
        """When each running VM's QEMU started (Unix time), for VMs on this machine."""
        if not self.host.is_local:
            return {}
        pids = qemu_pids(uuids)
        now = time.time()
        started = {}
        for uuid in uuids:
            pid = pids.get(uuid)
            uptime = process_uptime(pid) if pid else None
            if uptime is not None:
                started[uuid] = now - uptime
        return started

    def _lease_times(self) -> dict[str, int]:
        """Lease seconds per network (libvirt's <lease expiry>, else dnsmasq's hour)."""
        from virtkit.xml.network import Network as NetworkXML

        times = {}
        for net_name in self.host.networks.names():
            try:
                net = NetworkXML.parse(self.host.networks.xml(net_name))
            except NotFound:
                continue
            times[net_name] = DEFAULT_LEASE
            for ip in net.ips:
                for dhcp_range in ip.dhcp_ranges:
                    expiry = dhcp_range.node.find("lease")
                    if expiry is not None and expiry.get("expiry"):
                        unit = {"seconds": 1, "minutes": 60, "hours": 3600}.get(
                            expiry.get("unit") or "minutes", 60
                        )
                        times[net_name] = int(expiry.get("expiry") or 0) * unit
        return times

    def addresses(
        self, names: builtins.list[str] | None = None
    ) -> dict[str, builtins.list[GuestAddress]]:
        """Every running VM's addresses (or those of ``names``), in one pass: each network's
        leases are read once; the agent and the neighbour table are asked only for NICs the
        leases do not cover."""
        return {name: found for name, (_dom, found) in self.address_pass(names).items()}

    def address_pass(
        self, names: builtins.list[str] | None = None
    ) -> dict[str, tuple[Domain, builtins.list[GuestAddress]]]:
        """What :meth:`addresses` finds, with the live definition of each VM it read (its SSH
        forward, its metadata): a caller needing both reads each definition once."""
        wanted = set(names) if names else None
        for name in wanted or ():
            validate_name(name)
        doms: dict[str, tuple[Guest, Domain]] = {}
        for guest in self.host.list_guests(active=True):
            try:
                if wanted is not None and guest.name not in wanted:
                    continue
                doms[guest.name] = (guest, guest.definition())
            except NotFound:
                continue
        for name in (wanted or set()) - set(doms):
            guest = self.host.lookup(name)  # NotFound for a VM that does not exist
            doms.setdefault(name, (guest, guest.definition()))
        started = self._started([d.uuid or "" for _g, d in doms.values()])
        networks = {i.source_network for _g, d in doms.values() for i in d.interfaces
                    if i.type == "network" and i.source_network}  # fmt: skip
        lease_times = self._lease_times() if networks else {}
        leases: dict[str, builtins.list[tuple[str, int, int, str]]] = {}
        for net_name in networks:
            try:
                for lease in self.host.networks.leases(net_name):
                    mac = str(lease.get("mac") or "").lower()
                    expires = int(lease.get("expirytime") or 0)
                    leases.setdefault(mac, []).append(
                        (str(lease.get("ipaddr")), int(lease.get("prefix") or 0), expires,
                         net_name)
                    )  # fmt: skip
            except NotFound:
                continue
        result: dict[str, tuple[Domain, builtins.list[GuestAddress]]] = {}
        for name, (guest, dom) in sorted(doms.items()):
            found: builtins.list[GuestAddress] = []
            if not guest.is_active():
                result[name] = (dom, [])
                continue
            boot = started.get(dom.uuid or "")
            uncovered = []
            for iface in dom.interfaces:
                mac = (iface.mac or "").lower()
                current = []
                for ip, prefix, expires, net_name in leases.get(mac, []):
                    granted = expires - lease_times.get(net_name, DEFAULT_LEASE) if expires else 0
                    if boot is not None and expires and granted < boot - 1:
                        continue  # a lease from an earlier boot: stale
                    current.append(GuestAddress(mac=mac, ip=ip, prefix=prefix, source="lease",
                                                interface=iface.target_dev))  # fmt: skip
                found += current
                if not current:
                    uncovered.append(mac)
            if dom.guest_agent is not None:  # only the agent knows a user-mode NIC's address
                uncovered += [n.mac for n in _user_nics(dom) if n.mac]
            if uncovered:
                found += self._ask(guest, dom, set(uncovered))
            result[name] = (dom, found)
        return result

    def _ask(self, guest: Guest, dom: Domain, macs: set[str]) -> builtins.list[GuestAddress]:
        """The guest agent (when the VM has its channel), then the neighbour table."""
        for source in ("agent", "arp") if dom.guest_agent is not None else ("arp",):
            try:
                answers = guest.interface_addresses(source)
            except (Unsupported, InvalidState, VirtkitError) as exc:
                log.debug("no addresses from %s for %s: %s", source, dom.name, exc)
                continue
            found = [
                GuestAddress(
                    mac=mac.lower(), ip=ip, prefix=prefix, source=source, interface=iface_name
                )
                for mac, iface_name, addrs in answers
                if mac.lower() in macs
                for ip, prefix in addrs
                if _is_address(ip) and not ip.startswith(("127.", "::1", "fe80:"))
            ]
            if found:
                return found
        return self._local_neighbours(dom, macs)

    def _local_neighbours(self, dom: Domain, macs: set[str]) -> builtins.list[GuestAddress]:
        """The neighbour table read from /proc, when libvirt runs on this machine: the QEMU
        process's network namespace is its host's (libvirt 9.0's own reader fails on newer
        kernels' netlink messages: "wrong nlmsg len")."""
        if not self.host.is_local:
            return []
        pid = qemu_pids([dom.uuid or ""]).get(dom.uuid or "")
        if pid is None:
            return []
        return [
            GuestAddress(mac=mac, ip=ip, prefix=0, source="arp")
            for ip, mac in neighbours(pid)
            if mac in macs
        ]

    def ip(self, name: str) -> builtins.list[GuestAddress]:
        validate_name(name)
        guest = self.host.lookup(name)
        if not guest.is_active():
            raise InvalidState(f"VM {name!r} is not running: it has no address", code="vm_shutoff")
        return self.addresses([name]).get(name, [])
