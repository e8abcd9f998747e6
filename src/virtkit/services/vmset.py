"""Changing a VM: vCPUs, memory (persistently always, live where libvirt can), autostart."""

from __future__ import annotations

import builtins
import logging
from dataclasses import dataclass

from virtkit.backend.capabilities import CapabilityProbe
from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.errors import InvalidState, VirtkitError
from virtkit.services.vmlimits import check_memory, check_vcpus, vcpu_limit
from virtkit.services.vmstate import lookup
from virtkit.specs import SetResult, VMSetSpec, format_size
from virtkit.xml.domain import Domain, Tag

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

    def set_owner(self, name: str, owner: str | None) -> None:
        guest = lookup(self.host, name)
        if not guest.is_persistent():
            raise InvalidState(f"VM {name!r} is transient: it has no owner", code="vm_transient")
        config = guest.definition(inactive=True)
        config.ensure_virtkit_metadata().owner = owner or None
        self.host.define(config.to_xml())

    def set_tags(self, name: str, tags: list[str]) -> None:
        """Replace the VM's tags (virtkit's metadata in its persistent definition)."""
        guest = lookup(self.host, name)
        if not guest.is_persistent():
            raise InvalidState(f"VM {name!r} is transient: it has no tags", code="vm_transient")
        config = guest.definition(inactive=True)
        meta = config.ensure_virtkit_metadata()
        for tag in list(meta.tags):
            meta.tags.remove(tag)
        for name_ in tags:
            tag = Tag()
            tag.name = name_
            meta.tags.append(tag)
        self.host.define(config.to_xml())

    def set_site(self, name: str, site: str | None, spec: str | None) -> None:
        """Mark the VM as managed by ``site`` (``virtkit apply``) with its spec's digest;
        ``None`` unmarks it."""
        guest = lookup(self.host, name)
        config = guest.definition(inactive=True)
        meta = config.ensure_virtkit_metadata()
        meta.site = site
        meta.site_spec = spec if site else None
        self.host.define(config.to_xml())

    def set(
        self,
        name: str,
        *,
        vcpus: int | None = None,
        memory: int | str | None = None,
        max_vcpus: int | None = None,
    ) -> SetResult:
        """Change vCPUs, their maximum and/or memory (bytes, or text such as ``2G``; bare: MiB):
        persistently always, live where libvirt can (the maximum only from the next start).

        Every value is checked before any is changed, so a refused change changes nothing.
        """
        change = VMSetSpec.check(vcpus=vcpus, memory=memory, max_vcpus=max_vcpus)
        guest = lookup(self.host, name)
        config = guest.definition(inactive=True)
        active = guest.is_active()
        plan = None
        if change.vcpus is not None or change.max_vcpus is not None:
            plan = self._plan_vcpus(name, guest, config, change, active)
        if change.memory is not None:
            check_memory(self.host, change.memory)
        changes: builtins.list[str] = []
        if plan is not None:
            changes.extend(_set_vcpus(guest, plan, active))
        if change.memory is not None:
            changes.append(_set_memory(guest, config, change.memory, active))
        return SetResult(name=name, changes=changes)

    def _plan_vcpus(
        self, name: str, guest: Guest, config: Domain, change: VMSetSpec, active: bool
    ) -> VCpuPlan:
        os_el = config.os
        machine = os_el.machine if os_el else None
        arch = (os_el.arch if os_el else None) or "x86_64"
        domain_type = config.type or self.probe.facts(arch).domain_type
        limit = vcpu_limit(self.host, self.probe, arch, machine, domain_type)
        old_max = guest.max_vcpus_config()
        old_count = config.vcpu_current or config.vcpu or 1
        count = change.vcpus if change.vcpus is not None else min(old_count, change.max_vcpus or 0)
        maximum = change.max_vcpus
        if maximum is None:
            live_max = guest.max_vcpus_live() if active and count > old_max else None
            if live_max is not None and count > live_max:
                raise _over_running_maximum(name, live_max, count)
            maximum = max(old_max, count)  # a shut-off VM's maximum follows its count
        check_vcpus(maximum, limit, machine)
        asked = (change.vcpus is not None, change.max_vcpus is not None)
        return VCpuPlan(count, maximum, old_count, old_max, *asked)


@dataclass(frozen=True)
class VCpuPlan:
    count: int
    maximum: int
    old_count: int
    old_maximum: int
    count_asked: bool  # vcpus given: change the running VM too
    maximum_asked: bool  # max_vcpus given: say what happened to it


def _over_running_maximum(name: str, live_max: int, count: int) -> InvalidState:
    """A running VM cannot take more vCPUs than the maximum it was started with; raising the
    maximum silently (for the next start) would leave the user believing it took them."""
    return InvalidState(
        f"VM {name!r} runs with its maximum of {live_max} vCPUs and cannot take {count} live; "
        f"raise the maximum for its next start: virtkit vm set {name} --max-vcpus {count} "
        f"--vcpus {count} (new VMs get a maximum above their count for live changes)",
        code="vcpus_over_maximum",
    )


def _set_vcpus(guest: Guest, plan: VCpuPlan, active: bool) -> builtins.list[str]:
    count, maximum = plan.count, plan.maximum
    # the persistent count never exceeds the persistent maximum, so the order matters
    if maximum > plan.old_maximum:
        guest.set_vcpus(maximum, config=True, maximum=True)
    if count != plan.old_count or maximum < plan.old_maximum:
        guest.set_vcpus(count, config=True)
    if maximum < plan.old_maximum:
        guest.set_vcpus(maximum, config=True, maximum=True)
    lines = []
    if plan.maximum_asked or maximum != plan.old_maximum:
        lines.append(f"vCPU maximum: {maximum} from the next start")
    if not plan.count_asked:
        if count != plan.old_count:
            lines.append(f"vCPUs: {count} from the next start (lowered to the new maximum)")
        return lines
    if not active:
        return [*lines, f"vCPUs: {count} from the next start"]
    live_max = guest.max_vcpus_live()
    if count > live_max:
        return [
            *lines,
            f"vCPUs: {count} from the next start (the running VM was started with at most "
            f"{live_max})",
        ]
    try:
        guest.set_vcpus(count, live=True)
    except VirtkitError as exc:
        log.info("live vCPU change refused: %s", exc)
        return [*lines, f"vCPUs: {count} from the next start (not live: {exc.message})"]
    return [*lines, f"vCPUs: {count} now and from the next start"]


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
