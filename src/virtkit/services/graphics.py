"""A VM's graphical console (VNC, SPICE): where it listens, and one-time passwords for it.

A password is set on the live ``<graphics>`` device (``updateDeviceFlags``, live only: the
persistent definition never holds it) with ``passwdValidTo`` a little ahead, so a password
handed to a browser or a ``.vv`` file is useless soon after. Connections open already stay.

Where to connect: on a local URI, the device's listen address (a wildcard listen means this
machine, ``127.0.0.1``). On a ``qemu+ssh://`` URI, through SSH to the remote host, as libvirt
itself goes there: ``tunnel`` is the ``ssh -W`` command whose stdin and stdout are the display
(backend/sshtunnel.py), so the default listen on the remote ``127.0.0.1`` works. On another
remote URI (``qemu+tcp``, ``qemu+tls``), the URI's host name on the device's port, which works
only if the VM's graphics listen on an address reachable from here.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlparse

from virtkit.backend.host import Host
from virtkit.backend.sshtunnel import tunnel_command
from virtkit.errors import BackendError, InvalidState
from virtkit.specs import validate_name
from virtkit.xml.domain import Graphics

log = logging.getLogger(__name__)

GraphicsKind = Literal["vnc", "spice"]
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})
_NO_DEVICE = {
    "vnc": "VM {name!r} has no VNC graphics (create it with graphics: vnc)",
    "spice": "VM {name!r} has no SPICE graphics (create it with graphics: spice)",
}


@dataclass(frozen=True)
class GraphicsAccess:
    kind: str
    host: str  # where to connect from this machine (see the module text)
    port: int
    password: str | None
    valid_until: float | None  # seconds since the epoch
    tunnel: list[str] | None = None  # argv whose stdin/stdout is the display (remote over SSH)


class GraphicsService:
    def __init__(self, host: Host) -> None:
        self.host = host

    def endpoint(self, name: str, kind: GraphicsKind) -> GraphicsAccess:
        """Where the running VM's ``kind`` graphics listen (no password)."""
        graphics = self._device(name, kind)
        port = _port(graphics, name)
        return GraphicsAccess(
            kind, self._connect_host(graphics), port, None, None, self._tunnel(graphics, port)
        )

    def one_time_password(
        self, name: str, kind: GraphicsKind, valid_for: float = 30.0
    ) -> GraphicsAccess:
        """Set a fresh random password on the running VM's ``kind`` graphics, valid for
        ``valid_for`` seconds, and say where to connect."""
        graphics = self._device(name, kind)
        port = _port(graphics, name)
        # VNC authentication uses only the first 8 characters of a password.
        password = secrets.token_urlsafe(6) if kind == "vnc" else secrets.token_urlsafe(18)
        until = time.time() + valid_for
        graphics.passwd = password
        graphics.passwd_valid_to = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        graphics.connected = None  # libvirt's default: keep the clients connected already
        guest = self.host.lookup(name)
        try:
            guest.update_device(graphics.to_xml(), live=True, config=False)
        except BackendError as exc:
            if "password" not in exc.message.lower():
                raise
            raise InvalidState(
                f"cannot set a one-time {kind} password on VM {name!r}: its display was started "
                "without password authentication",
                code="graphics_no_password",
                hint="give its <graphics> a passwd (virsh edit; any value) and restart the VM; "
                "VMs virtkit creates have one",
            ) from exc
        log.info("set a one-time %s password on VM %s (valid %g s)", kind, name, valid_for)
        return GraphicsAccess(
            kind, self._connect_host(graphics), port, password, until, self._tunnel(graphics, port)
        )

    def _device(self, name: str, kind: GraphicsKind) -> Graphics:
        validate_name(name)
        guest = self.host.lookup(name)
        if not guest.is_active():
            raise InvalidState(
                f"VM {name!r} is not running: its graphical console is not there",
                code="vm_shutoff",
            )
        for graphics in guest.definition().graphics:
            if graphics.type == kind:
                return graphics
        raise InvalidState(_NO_DEVICE[kind].format(name=name), code=f"no_{kind}")

    def _connect_host(self, graphics: Graphics) -> str:
        if not self.host.is_local:
            return urlparse(self.host.uri).hostname or "127.0.0.1"
        return _listen_host(graphics)

    def _tunnel(self, graphics: Graphics, port: int) -> list[str] | None:
        """The SSH relay to the display, for a host reached over SSH (else None)."""
        if self.host.is_local:
            return None
        return tunnel_command(self.host.uri, _listen_host(graphics), port)


def _listen_host(graphics: Graphics) -> str:
    """Where the display listens, as its own host sees it (a wildcard: that host's loopback)."""
    listen = graphics.listen_address or graphics.listen or ""
    return "127.0.0.1" if listen in _WILDCARDS else listen


def _port(graphics: Graphics, name: str) -> int:
    port = graphics.port
    if port is None or port <= 0:
        raise InvalidState(
            f"the {graphics.type} graphics of VM {name!r} have no TCP port (a socket listen?)",
            code=f"no_{graphics.type}",
        )
    return port
