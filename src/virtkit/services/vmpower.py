"""Power: start, shut down, power off, reboot, reset, pause, resume, and waiting for a state."""

from __future__ import annotations

import contextlib
import logging
import time

from virtkit.backend.host import Host
from virtkit.errors import InvalidState, NotFound, Timeout
from virtkit.services.vmstate import lookup, require, state_error
from virtkit.specs import VMState

log = logging.getLogger(__name__)


class VMPower:
    def __init__(self, host: Host) -> None:
        self.host = host

    def start(self, name: str, *, paused: bool = False) -> None:
        guest = require(self.host, name, (VMState.SHUTOFF, VMState.CRASHED), "start")
        guest.start(paused=paused)

    def wait_for_state(self, name: str, states: tuple[VMState, ...], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if lookup(self.host, name).state()[0] in states:
                    return True
            except NotFound:
                return True  # a transient VM that stopped is gone
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def shutdown(self, name: str, *, timeout: float = 60.0, force: bool = False) -> str:
        """Graceful shutdown (the guest agent when one answers, else ACPI), waiting up to
        ``timeout`` s; with ``force``, power off after that.

        Returns how it ended: ``shutdown``, ``forced`` (powered off after the timeout) or
        ``forced-paused`` (a paused VM, powered off at once with ``force``).
        """
        guest = lookup(self.host, name)
        state = guest.state()[0]
        if state == VMState.PAUSED and not force:
            raise InvalidState(
                f"cannot shut down VM {name!r}: it is paused and cannot see the "
                "power button (resume it first, or use --force)",
                code="vm_paused",
            )
        if state not in (VMState.RUNNING, VMState.PAUSED, VMState.SHUTTING_DOWN):
            raise state_error(name, "shut down", state)
        if state == VMState.PAUSED:
            log.warning("VM %s is paused and cannot see the power button; powering it off", name)
            self.stop(name)
            return "forced-paused"
        guest.shutdown()
        if self.wait_for_state(name, (VMState.SHUTOFF, VMState.CRASHED), timeout):
            return "shutdown"
        if not force:
            raise Timeout(
                f"VM {name!r} did not shut down within {timeout:.0f} s (the guest may ignore ACPI)",
                hint="use --force to power it off after the timeout",
            )
        log.warning("VM %s did not shut down within %.0f s; powering it off", name, timeout)
        self.stop(name)
        return "forced"

    def stop(self, name: str) -> None:
        """Power off at once (like pulling the plug)."""
        guest = require(
            self.host,
            name,
            (VMState.RUNNING, VMState.PAUSED, VMState.SHUTTING_DOWN, VMState.PMSUSPENDED),
            "power off",
        )
        try:
            guest.destroy()
        except InvalidState:
            # It stopped by itself meanwhile, which is what was asked (a transient VM is gone).
            with contextlib.suppress(NotFound):
                if guest.is_active():
                    raise

    def reboot(self, name: str) -> None:
        require(self.host, name, (VMState.RUNNING,), "reboot").reboot()

    def reset(self, name: str) -> None:
        require(self.host, name, (VMState.RUNNING, VMState.PAUSED), "reset").reset()

    def pause(self, name: str) -> None:
        require(self.host, name, (VMState.RUNNING,), "pause").suspend()

    def resume(self, name: str) -> None:
        require(self.host, name, (VMState.PAUSED,), "resume").resume()
