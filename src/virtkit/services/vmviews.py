"""Reading VMs: the list, one VM's details, its XML and its state."""

from __future__ import annotations

import builtins

from virtkit.backend.host import Host
from virtkit.backend.procfs import process_uptime, qemu_pids
from virtkit.services.vmmeta import MetadataCache, VMMeta
from virtkit.services.vmstate import lookup
from virtkit.specs import DiskView, GraphicsView, VMInfo, VMState, VMSummary
from virtkit.xml.base import VIRTKIT_NS
from virtkit.xml.domain import Domain


class VMViews:
    """What ``vm list``, ``vm show``, ``vm xml`` and ``vm state`` read."""

    def __init__(self, host: Host, meta: MetadataCache | None = None) -> None:
        self.host = host
        self.meta = meta or MetadataCache(host, None)

    def _uptimes(self, running: builtins.list[str]) -> dict[str, float | None]:
        """UUID -> seconds since its QEMU started, for the ``running`` VMs (UUIDs) when they run
        on this (local) host."""
        if not self.host.is_local or not running:
            return {}
        return {uuid: process_uptime(pid) for uuid, pid in qemu_pids(running).items()}

    def list(self, *, refresh: bool = False) -> builtins.list[VMSummary]:
        """Every VM, from one bulk stats call; tags from the metadata copy (see vmmeta.py),
        which ``refresh`` reads afresh from each domain."""
        return [summary for summary, _meta in self.list_with_meta(refresh=refresh)]

    def list_with_meta(self, *, refresh: bool = False) -> builtins.list[tuple[VMSummary, VMMeta]]:
        """The listing, each VM with the copy of its virtkit metadata it was made from."""
        rows = self.host.domain_rows()
        meta = self.meta.lookup(rows, refresh=refresh)
        uptimes = self._uptimes([r.uuid for r in rows if r.state.is_active])
        out = [
            (
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
                    owner=meta[r.uuid].owner,
                    template=meta[r.uuid].template,
                ),
                meta[r.uuid],
            )
            for r in rows
        ]
        return sorted(out, key=lambda pair: pair[0].name)

    def owner(self, name: str) -> str | None:
        guest = lookup(self.host, name)
        xml = guest.metadata_xml(VIRTKIT_NS)
        return VMMeta.of_element(xml).owner if xml else None

    def get(self, name: str) -> VMInfo:
        guest = lookup(self.host, name)
        # Few round trips (each a libvirt RPC): the state call tells whether a second XML, the
        # persistent one where virtkit's metadata lives, differs from the live one at all.
        state, reason = guest.state()
        persistent = guest.is_persistent()
        dom = guest.definition()
        config = guest.definition(inactive=True) if persistent and state.is_active else dom
        info = guest.info()
        uuid = guest.uuid
        self.meta.update(uuid, VMMeta.of_domain(config))
        uptimes = self._uptimes([uuid] if info.state.is_active else [])
        fields: dict[str, object] = {
            "name": guest.name,
            "uuid": uuid,
            "state": info.state,
            "vcpus": info.vcpus,
            "memory": info.memory,
            "max_memory": info.max_memory,
            "uptime": uptimes.get(uuid),
            "autostart": guest.autostart() if persistent else False,
            "persistent": persistent,
            "tags": config.tag_names,
            "owner": config.virtkit.owner or None if config.virtkit else None,
            "template": config.virtkit.template or None if config.virtkit else None,
        }
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
