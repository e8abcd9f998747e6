"""Reading VMs: the list, one VM's details, its XML and its state."""

from __future__ import annotations

import builtins

from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.backend.procfs import process_uptime, qemu_pids
from virtkit.services.vmmeta import MetadataCache, VMMeta
from virtkit.services.vmstate import lookup
from virtkit.specs import DiskView, GraphicsView, VMInfo, VMState, VMSummary
from virtkit.xml.domain import Domain


class VMViews:
    """What ``vm list``, ``vm show``, ``vm xml`` and ``vm state`` read."""

    def __init__(self, host: Host, meta: MetadataCache | None = None) -> None:
        self.host = host
        self.meta = meta or MetadataCache(host, None)

    def _uptimes(self) -> dict[str, float | None]:
        """UUID -> seconds since its QEMU started, for VMs running on this (local) host."""
        if not self.host.is_local:
            return {}
        return {uuid: process_uptime(pid) for uuid, pid in qemu_pids().items()}

    @staticmethod
    def _config(guest: Guest) -> Domain:
        """The persistent definition, where virtkit's metadata (tags, owned disks) lives."""
        return guest.config()

    def _summary_fields(
        self, guest: Guest, config: Domain, uptimes: dict[str, float | None]
    ) -> dict[str, object]:
        info = guest.info()
        persistent = guest.is_persistent()
        uuid = guest.uuid
        return {
            "name": guest.name,
            "uuid": uuid,
            "state": info.state,
            "vcpus": info.vcpus,
            "memory": info.memory,
            "max_memory": info.max_memory,
            "uptime": uptimes.get(uuid) if info.state.is_active else None,
            "autostart": guest.autostart() if persistent else False,
            "persistent": persistent,
            "tags": config.tag_names,
        }

    def list(self, *, refresh: bool = False) -> builtins.list[VMSummary]:
        """Every VM, from one bulk stats call; tags from the metadata copy (see vmmeta.py),
        which ``refresh`` reads afresh from each domain."""
        rows = self.host.domain_rows()
        meta = self.meta.lookup(rows, refresh=refresh)
        uptimes = self._uptimes() if any(r.state.is_active for r in rows) else {}
        summaries = [
            VMSummary.model_construct(
                name=r.name,
                uuid=r.uuid,
                state=r.state,
                vcpus=r.vcpus,
                memory=r.memory,
                max_memory=r.max_memory,
                uptime=uptimes.get(r.uuid) if r.state.is_active else None,
                autostart=r.autostart,
                persistent=r.persistent,
                tags=list(meta[r.uuid].tags),
            )
            for r in rows
        ]
        return sorted(summaries, key=lambda s: s.name)

    def get(self, name: str) -> VMInfo:
        guest = lookup(self.host, name)
        config = self._config(guest)
        self.meta.update(guest.uuid, VMMeta.of_domain(config))
        fields = self._summary_fields(guest, config, self._uptimes())
        _state, reason = guest.state()
        dom = guest.definition()
        owned = set(config.owned_disk_paths)
        os_el = dom.os
        cpu = dom.cpu
        serial = next(iter(dom.serials), None)
        return VMInfo.model_validate(
            {
                **fields,
                "state_reason": reason,
                "domain_type": dom.type or "",
                "machine": os_el.machine if os_el else None,
                "arch": os_el.arch if os_el else None,
                "max_vcpus": dom.vcpu or 0,
                "cpu": (cpu.model or cpu.mode) if cpu else None,
                "description": dom.description,
                "boot": [b.dev for b in os_el.boot if b.dev] if os_el else [],
                "kernel": os_el.kernel if os_el else None,
                "initrd": os_el.initrd if os_el else None,
                "cmdline": os_el.cmdline if os_el else None,
                "disks": [
                    DiskView(
                        target=d.target_dev or "",
                        device=d.device or "disk",
                        bus=d.target_bus,
                        source=d.source,
                        format=d.driver_type,
                        readonly=d.readonly,
                        owned=d.source in owned,
                    )
                    for d in dom.disks
                ],
                "graphics": [
                    GraphicsView(
                        type=g.type or "",
                        listen=g.listen,
                        port=g.port if g.port and g.port > 0 else None,
                    )
                    for g in dom.graphics
                ],
                "serial_console": serial is not None,
                "ksm": not config.nosharepages,
                "serial_log": serial.log.file if serial is not None and serial.log else None,
                "console_pty": serial.source_path if serial is not None else None,
                "created_by_virtkit": config.virtkit is not None,
                "guest_agent": agent_state(dom),
                "ssh_host_keys": config.virtkit.pinned_host_keys if config.virtkit else [],
            }
        )

    def xml(self, name: str, *, inactive: bool = False) -> str:
        return lookup(self.host, name).xml(inactive=inactive)

    def state(self, name: str) -> VMState:
        return lookup(self.host, name).state()[0]


def agent_state(dom: Domain) -> str | None:
    agent = dom.guest_agent
    if agent is None:
        return None
    return agent.target_state or "disconnected"
