"""Reaching a guest: wait until it has booted, finished cloud-init, or answers SSH; and SSH in.

``boot`` and ``cloud-init`` read the VM's serial console log (on the machine running virtkit);
``ssh`` connects to the guest's SSH port: a user-mode NIC's forwarded port on 127.0.0.1, else
the first address ``vm ip`` finds, port 22.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Sequence
from typing import get_args

from virtkit.backend.host import Host
from virtkit.errors import InvalidInput, InvalidState, NotFound, Timeout, Unsupported
from virtkit.services.domainbuilder import ssh_forward_port
from virtkit.services.nics import NicService
from virtkit.services.tinyguest import BOOT_MARKER
from virtkit.services.vmfiles import VMFiles
from virtkit.specs import GuestAddress, validate_name
from virtkit.specs.vm import WaitFor
from virtkit.xml.domain import Domain

WAIT_FOR: tuple[str, ...] = get_args(WaitFor)
_LOGIN = re.compile(r"^\s*\S+ login:", re.MULTILINE)  # a getty prompt; output may follow it
_CLOUD_INIT_DONE = re.compile(r"Cloud-init v\. \S+ finished at")


class AccessService:
    def __init__(self, host: Host, nics: NicService, files: VMFiles) -> None:
        self.host = host
        self.nics = nics
        self.files = files

    def _dom(self, name: str) -> Domain:
        validate_name(name)
        guest = self.host.lookup(name)
        if not guest.is_active():
            raise InvalidState(f"VM {name!r} is not running", code="vm_shutoff")
        return guest.definition()

    def _console(self, name: str) -> str:
        path = self.files.serial_log(name)
        if path is None or not self.host.is_local:
            raise Unsupported(
                "waiting for boot or cloud-init reads the serial console log, which is on the VM "
                "host: run virtkit there, or wait --for ssh",
            )
        return path.read_text(errors="replace") if path.exists() else ""

    def ssh_target(self, name: str) -> tuple[str, int]:
        """(address, port) of the guest's SSH server."""
        dom = self._dom(name)
        port = ssh_forward_port(dom)
        target = ssh_endpoint(dom, self.nics.ip(name) if port is None else [])
        if target is not None:
            return target
        raise NotFound(
            f"VM {name!r} has no address yet (no lease, agent or neighbour entry)",
            code="no_address",
        )

    @staticmethod
    def _ssh_answers(address: str, port: int) -> bool:
        try:
            with socket.create_connection((address, port), timeout=3) as sock:
                sock.settimeout(5)
                return sock.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def check_wait(self, name: str, what: str) -> None:
        """What ``wait`` checks first: ``what`` is one it knows, the VM exists (NotFound) and
        runs (InvalidState ``vm_shutoff``)."""
        if what not in WAIT_FOR:
            raise InvalidInput(
                f"wait for one of {', '.join(WAIT_FOR)}, not {what!r}", code="invalid_wait"
            )
        self._dom(name)

    def wait(
        self, name: str, what: str, timeout: float = 300.0, stop: threading.Event | None = None
    ) -> float:
        """Wait until the VM has booted / finished cloud-init / answers SSH; returns seconds.
        ``stop`` (set when the service stops) ends the wait early, with InvalidState."""
        self.check_wait(name, what)
        stop = stop or threading.Event()
        started = time.monotonic()
        while True:
            self._dom(name)  # still there and running
            if what == "boot":
                log = self._console(name)
                if _LOGIN.search(log) or BOOT_MARKER in log:
                    break
            elif what == "cloud-init":
                if _CLOUD_INIT_DONE.search(self._console(name)):
                    break
            else:
                try:
                    address, port = self.ssh_target(name)
                except NotFound:
                    address, port = "", 0
                if address and self._ssh_answers(address, port):
                    break
            if time.monotonic() - started > timeout:
                raise Timeout(f"VM {name!r}: no {what} within {timeout:.0f} s", code="wait_timeout")
            if stop.wait(0.5):
                raise InvalidState(
                    f"stopped waiting for {what} of VM {name!r}: the service is stopping",
                    code="service_stopping",
                )
        return time.monotonic() - started

    def login_user(self, name: str) -> str | None:
        dom = self._dom(name)
        meta = dom.virtkit
        return meta.login_user if meta is not None else None

    def host_keys(self, name: str) -> list[str]:
        """The public SSH host keys virtkit made for the guest (empty: it made its own), from
        the VM's definition (what ``vm show`` lists)."""
        validate_name(name)
        meta = self.host.lookup(name).definition(inactive=True).virtkit
        return meta.pinned_host_keys if meta is not None else []

    def known_hosts(self, name: str) -> tuple[str, str] | None:
        """(host key alias, known_hosts text) pinning the guest's host keys, for ``ssh -o
        HostKeyAlias=ALIAS -o UserKnownHostsFile=FILE -o StrictHostKeyChecking=yes``; None when
        virtkit did not make them."""
        return pinned_known_hosts(name, self.host_keys(name))


def ssh_endpoint(dom: Domain, addresses: Sequence[GuestAddress]) -> tuple[str, int] | None:
    """(address, port) of a running guest's SSH server: a user-mode NIC's forward on 127.0.0.1,
    else its first address, port 22; None when it has neither."""
    port = ssh_forward_port(dom)
    if port is not None:
        return "127.0.0.1", port
    for address in addresses:
        return address.ip, 22
    return None


def pinned_known_hosts(name: str, keys: Sequence[str]) -> tuple[str, str] | None:
    """(host key alias, known_hosts text) for the host keys virtkit pinned for VM ``name``;
    None when it pinned none (the guest made its own)."""
    if not keys:
        return None
    alias = f"virtkit-{name}"
    return alias, "".join(f"{alias} {key}\n" for key in keys)
