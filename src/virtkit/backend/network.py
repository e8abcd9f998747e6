"""Virtual networks through libvirt's network API (so they work on remote hosts too)."""

from __future__ import annotations

import contextlib
from typing import Any

import libvirt

from virtkit.backend.connection import Connection
from virtkit.backend.guest import seam
from virtkit.errors import NotFound

# virNetworkUpdate sections and commands, by name (the service speaks in names)
SECTIONS = {
    "dhcp-host": libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
    "dns-host": libvirt.VIR_NETWORK_SECTION_DNS_HOST,
}
COMMANDS = {
    "add": libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
    "delete": libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
    "modify": libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY,
}


class Networks:
    """Virtual networks of one libvirt host. Every call goes through the error map."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def _conn(self) -> libvirt.virConnect:
        return self.connection.get()

    def _net(self, name: str) -> libvirt.virNetwork:
        try:
            return self._conn().networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                raise NotFound(f"no network named {name!r}", code="network_not_found") from exc
            raise

    def names(self) -> list[str]:
        with seam(self.connection):
            return sorted(n.name() for n in self._conn().listAllNetworks(0))

    def xml(self, name: str, *, inactive: bool = False) -> str:
        with seam(self.connection):
            net = self._net(name)
            if inactive and net.isPersistent():
                try:
                    return str(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
                except libvirt.libvirtError as exc:
                    # drivers without the flag (e.g. test://): the one definition they keep
                    if exc.get_error_code() not in (
                        libvirt.VIR_ERR_NO_SUPPORT,
                        libvirt.VIR_ERR_INVALID_ARG,
                    ):
                        raise
            return str(net.XMLDesc(0))

    def exists(self, name: str) -> bool:
        with seam(self.connection):
            try:
                self._net(name)
                return True
            except NotFound:
                return False

    def state(self, name: str) -> tuple[bool, bool, bool]:
        """(active, autostart, persistent)."""
        with seam(self.connection):
            net = self._net(name)
            return bool(net.isActive()), bool(net.autostart()), bool(net.isPersistent())

    def define(self, xml: str, *, start: bool = True, autostart: bool = True) -> None:
        """Define, start and mark autostart; undo the definition if a step fails."""
        with seam(self.connection):
            net = self._conn().networkDefineXML(xml)
            try:
                if start:
                    net.create()
                if autostart:
                    net.setAutostart(1)
            except libvirt.libvirtError:
                with contextlib.suppress(libvirt.libvirtError):
                    if net.isActive():
                        net.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    net.undefine()
                raise

    def start(self, name: str) -> None:
        with seam(self.connection):
            self._net(name).create()

    def stop(self, name: str) -> None:
        with seam(self.connection):
            self._net(name).destroy()

    def set_autostart(self, name: str, on: bool) -> None:
        with seam(self.connection):
            self._net(name).setAutostart(1 if on else 0)

    def undefine(self, name: str) -> None:
        """Stop (if running) and remove a network."""
        with seam(self.connection):
            net = self._net(name)
            if net.isActive():
                net.destroy()
            if net.isPersistent():
                net.undefine()

    def update(self, name: str, command: str, section: str, xml: str, *, index: int = -1) -> None:
        """A live change (``virNetworkUpdate``) to the running network and its definition."""
        with seam(self.connection):
            net = self._net(name)
            flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
            if net.isActive():
                flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
            net.update(COMMANDS[command], SECTIONS[section], index, xml, flags)

    def leases(self, name: str) -> list[dict[str, Any]]:
        """The network's DHCP leases (dnsmasq's), as libvirt reports them."""
        with seam(self.connection):
            net = self._net(name)
            if not net.isActive():
                return []
            return [dict(lease) for lease in net.DHCPLeases()]
