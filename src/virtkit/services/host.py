"""What a host is and can do: ``virtkit host info``."""

from __future__ import annotations

from virtkit.backend import kvmdev
from virtkit.backend.capabilities import CapabilityProbe
from virtkit.backend.host import Host
from virtkit.backend.procfs import ksm_run_state
from virtkit.errors import Unsupported, VirtkitError
from virtkit.specs import HostInfo, HugePages, KsmState, KvmFix, KvmStatus, NumaNode

PAGE_SIZE = 4096


class HostService:
    def __init__(self, host: Host, probe: CapabilityProbe) -> None:
        self.host = host
        self.probe = probe

    def ksm(self) -> KsmState:
        params = self.host.memory_parameters()

        def get(key: str) -> int | None:
            return params.get(f"shm_{key}")

        sharing = get("pages_sharing")
        return KsmState(
            run=ksm_run_state() if self.host.is_local else None,
            pages_shared=get("pages_shared"),
            pages_sharing=sharing,
            pages_unshared=get("pages_unshared"),
            pages_volatile=get("pages_volatile"),
            full_scans=get("full_scans"),
            pages_to_scan=get("pages_to_scan"),
            sleep_millisecs=get("sleep_millisecs"),
            merge_across_nodes=get("merge_across_nodes"),
            saved=None if sharing is None else sharing * PAGE_SIZE,
        )

    def info(self, *, refresh_kvm: bool = False) -> HostInfo:
        if refresh_kvm:
            self.probe.reprobe()
        caps = self.probe.capabilities()
        arch = caps.host_arch or "x86_64"
        facts = self.probe.facts(arch, refresh=refresh_kvm)
        node = self.host.node_info()
        memory_total, memory_free = self.host.memory()
        driver, hv_version = self.probe.hypervisor()
        cells = list(caps.cells)
        hugepages: dict[int, int] = {}
        for cell in cells:
            for pages in cell.pages:
                if pages.size_kib and pages.size_kib > 4:
                    hugepages[pages.size_kib] = hugepages.get(pages.size_kib, 0) + (
                        pages.count or 0
                    )
        try:
            max_vcpus: int | None = self.probe.domain_capabilities(
                arch, "q35" if "q35" in facts.machines else None, facts.domain_type
            ).max_vcpus
        except VirtkitError:
            max_vcpus = None
        return HostInfo(
            uri=self.host.uri,
            hostname=self.host.hostname(),
            libvirt_version=self.host.libvirt_version(),
            hypervisor=driver,
            hypervisor_version=hv_version,
            arch=caps.host_arch,
            cpu_model=caps.cpu_model,
            cpu_vendor=caps.cpu_vendor,
            cpus=node.cpus,
            sockets=node.sockets,
            cores=node.cores,
            threads=node.threads,
            numa_nodes=[
                NumaNode(id=c.id or 0, memory=(c.memory_kib or 0) * 1024, cpus=c.cpus)
                for c in cells
            ],
            memory_total=memory_total,
            memory_free=memory_free,
            hugepages=[
                HugePages(
                    size=size * 1024,
                    total=total,
                    free=self.host.free_pages(size, max(1, len(cells))),
                )
                for size, total in sorted(hugepages.items())
            ],
            ksm=self.ksm(),
            kvm=KvmStatus(
                usable=facts.kvm.usable,
                reason=facts.kvm.reason,
                checked_at=facts.kvm.checked_at,
                cached=facts.kvm.cached,
                fix=facts.kvm.fix,
            ),
            domain_type=facts.domain_type,
            machines=[m for m in facts.machines if "-" not in m],
            max_vcpus=max_vcpus,
        )

    def fix_kvm(self) -> KvmFix:
        """Give /dev/kvm the group and mode Debian's udev rule gives it, where no udev runs.

        Local hosts only: the device is this machine's."""
        if not self.host.is_local:
            raise Unsupported(f"{self.host.uri} is not this machine: fix /dev/kvm on that host")
        done = kvmdev.apply_udev_default(self.probe.kvm_device)
        return KvmFix(changed=done.changed, message=done.message)
