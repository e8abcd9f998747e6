"""Changing a VM: vCPUs, memory (persistently always, live where libvirt can), autostart."""

from __future__ import annotations

import builtins
import logging

from virtkit.backend.capabilities import CapabilityProbe
from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.errors import InvalidState, VirtkitError
from virtkit.services.vmlimits import check_memory, check_vcpus, vcpu_limit
from virtkit.services.vmstate import lookup
from virtkit.specs import SetResult, VMSetSpec, format_size
from virtkit.xml.domain import Domain

log = logging.getLogger(__name__)


class VMSetter:
    def __init__(self, host: Host, probe: CapabilityProbe) -> None:
        self.host = host
        self.probe = probe

    def set_autostart(self, name: str, on: bool) -> None:
        guest = lookup(self.host, name)
        if not guest.is_persistent():
            raise InvalidState(
                f"VM {name!r} is transient: it has no autostart", code="vm_transient"
            )
        guest.set_autostart(on)

    def set(
        self, name: str, *, vcpus: int | None = None, memory: int | str | None = None
    ) -> SetResult:
        """Change vCPUs and/or memory (bytes, or text such as ``2G``; bare: MiB): persistently
        always, live where libvirt can.

        Both values are checked before either is changed, so a refused change changes nothing.
        """
        change = VMSetSpec.check(vcpus=vcpus, memory=memory)
        vcpus, memory = change.vcpus, change.memory
        guest = lookup(self.host, name)
        config = guest.definition(inactive=True)
        if vcpus is not None:
            os_el = config.os
            machine = os_el.machine if os_el else None
            arch = (os_el.arch if os_el else None) or "x86_64"
            domain_type = config.type or self.probe.facts(arch).domain_type
            limit = vcpu_limit(self.host, self.probe, arch, machine, domain_type)
            check_vcpus(vcpus, limit, machine)
        if memory is not None:
            check_memory(self.host, memory)
        active = guest.is_active()
        changes: builtins.list[str] = []
        if vcpus is not None:
            changes.append(_set_vcpus(guest, vcpus, active))
        if memory is not None:
            changes.append(_set_memory(guest, config, memory, active))
        return SetResult(name=name, changes=changes)


def _set_vcpus(guest: Guest, count: int, active: bool) -> str:
    if count > guest.max_vcpus_config():
        guest.set_vcpus(count, config=True, maximum=True)
    guest.set_vcpus(count, config=True)
    if not active:
        return f"vCPUs: {count} from the next start"
    live_max = guest.max_vcpus_live()
    if count > live_max:
        return (
            f"vCPUs: {count} from the next start (the running VM was started with at most "
            f"{live_max})"
        )
    try:
        guest.set_vcpus(count, live=True)
    except VirtkitError as exc:
        log.info("live vCPU change refused: %s", exc)
        return f"vCPUs: {count} from the next start (not live: {exc.message})"
    return f"vCPUs: {count} now and from the next start"


def _set_memory(guest: Guest, config: Domain, memory: int, active: bool) -> str:
    kib = memory // 1024
    shown = format_size(memory)
    max_live = guest.info().max_memory  # what the running VM was started with
    if kib > (config.memory_kib or 0):
        guest.set_memory(kib, config=True, maximum=True)
    guest.set_memory(kib, config=True)
    if not active:
        return f"memory: {shown} from the next start"
    if kib * 1024 > max_live:
        return (
            f"memory: {shown} from the next start (more than the "
            f"{format_size(max_live)} the running VM was started with)"
        )
    try:
        guest.set_memory(kib, live=True)
    except VirtkitError as exc:
        return f"memory: {shown} from the next start (not live: {exc.message})"
    return f"memory: {shown} now (balloon) and from the next start"
