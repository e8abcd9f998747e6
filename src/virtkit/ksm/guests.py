"""What the KSM service and the tuning daemon both need of the host: that it is this machine,
and its running VMs with their KSM figures. Below both, so neither imports the other."""

from __future__ import annotations

from virtkit.backend.host import Host
from virtkit.backend.procfs import qemu_pids
from virtkit.errors import NotFound, Unsupported
from virtkit.ksm.sysfs import process_ksm
from virtkit.specs import KsmVM


def require_local(host: Host) -> None:
    """KSM lives in this machine's sysfs: a remote libvirt host has none of it here."""
    if not host.is_local:
        raise Unsupported("KSM is read and set on the VM host itself: run virtkit there")


def running_vms(host: Host) -> list[KsmVM]:
    """The running VMs with their KSM figures (merging pages, profit, opt-out), by name."""
    vms = []
    running = host.list_guests(active=True)  # one call: not a round trip per domain
    pids = qemu_pids(g.uuid for g in running)
    for guest in running:
        try:
            dom = guest.definition()
            uuid = guest.uuid
            memory = guest.info().memory
        except NotFound:
            continue
        pid = pids.get(uuid)
        stats = process_ksm(pid) if pid else {}
        merging = stats.get("ksm_merging_pages")
        profit = stats.get("ksm_process_profit")
        mergeable = stats.get("ksm_mergeable")
        vms.append(
            KsmVM(
                name=dom.name or "?", pid=pid, opted_out=dom.nosharepages,
                mergeable=None if mergeable is None else mergeable == "yes",
                merging_pages=int(merging) if merging is not None else None,
                profit=int(profit) if profit is not None else None,
                memory=memory,
            )
        )  # fmt: skip
    return sorted(vms, key=lambda v: v.name)
