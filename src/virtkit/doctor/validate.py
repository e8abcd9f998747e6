"""What ``virt-host-validate qemu`` checks, done by virtkit (so no finding of it is missing).

Each finding names the tool's "Checking ..." lines it covers in ``validate_checks``; the test
runs the real tool on the machine and holds the two side by side. The host's own facts only:
these checks run on the local machine, as the tool does.
"""

from __future__ import annotations

from pathlib import Path

from virtkit.backend import kvmdev
from virtkit.doctor import localfacts as lf
from virtkit.doctor.findings import ERROR, INFO, OK, WARNING, finding
from virtkit.specs.doctor import Finding

HW = "Checking for hardware virtualization"
KVM_EXISTS = "Checking if device /dev/kvm exists"
KVM_ACCESS = "Checking if device /dev/kvm is accessible"
VHOST = "Checking if device /dev/vhost-net exists"
TUN = "Checking if device /dev/net/tun exists"
IOMMU = "Checking for device assignment IOMMU support"
IOMMU_KERNEL = "Checking if IOMMU is enabled by kernel"
SECURE = "Checking for secure guest support"
CGROUP_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "devices", "blkio")


def cgroup_line(name: str, mount: bool = False) -> str:
    return f"Checking for cgroup '{name}' controller " + ("mount-point" if mount else "support")


def hardware(root: Path) -> list[Finding]:
    flags = lf.cpu_flags(root)
    subject = "host"
    out = []
    if flags & {"vmx", "svm"}:
        kind = "VT-x" if "vmx" in flags else "AMD-V"
        out.append(
            finding(
                "validate.hw-virt",
                OK,
                subject,
                f"the CPU has hardware virtualization ({kind})",
                validates=[HW],
            )
        )
    else:
        out.append(
            finding(
                "validate.hw-virt",
                ERROR,
                subject,
                "the CPU shows no hardware virtualization (no vmx or svm flag)",
                "Without VT-x or AMD-V, QEMU can only emulate the CPU (TCG), many times slower.",
                "enable VT-x/AMD-V in the firmware; on a cloud VM, choose an instance type "
                "with nested virtualization",
                validates=[HW],
            )
        )
    return out


def kvm_device(root: Path, device: Path) -> list[Finding]:
    """/dev/kvm exists and is accessible to this process (the tool's own question; whether
    QEMU's user can open it is the KVM verdict's)."""
    node = kvmdev.stat_device(root / str(device).lstrip("/"))
    if node is None:
        return [
            finding(
                "validate.kvm-device",
                ERROR,
                "host",
                f"{device} does not exist",
                "The kvm module is not loaded, or hardware virtualization is off.",
                "modprobe kvm_intel (or kvm_amd); enable VT-x/AMD-V in the firmware",
                validates=[KVM_EXISTS, KVM_ACCESS],
            )
        ]
    return [
        finding(
            "validate.kvm-device",
            OK,
            "host",
            f"{device} exists ({node.describe()})",
            validates=[KVM_EXISTS, KVM_ACCESS],
        )
    ]


def devices(root: Path) -> list[Finding]:
    out = []
    if lf.is_char_device(root, "dev/vhost-net"):
        out.append(
            finding("validate.vhost-net", OK, "host", "/dev/vhost-net exists", validates=[VHOST])
        )
    else:
        out.append(
            finding(
                "validate.vhost-net",
                WARNING,
                "host",
                "/dev/vhost-net does not exist",
                "Without vhost-net, virtio network packets go through QEMU's main loop: more "
                "CPU and latency per packet.",
                "modprobe vhost_net (and add vhost_net to /etc/modules)",
                action="modprobe",
                args={"module": "vhost_net"},
                validates=[VHOST],
            )
        )
    if lf.is_char_device(root, "dev/net/tun"):
        out.append(finding("validate.tun", OK, "host", "/dev/net/tun exists", validates=[TUN]))
    else:
        out.append(
            finding(
                "validate.tun",
                ERROR,
                "host",
                "/dev/net/tun does not exist",
                "Guests on virtual networks and bridges need TAP devices from /dev/net/tun.",
                "modprobe tun",
                action="modprobe",
                args={"module": "tun"},
                validates=[TUN],
            )
        )
    return out


def cgroups(root: Path) -> list[Finding]:
    groups = lf.cgroups(root)
    lines = [cgroup_line(n) for n in CGROUP_CONTROLLERS]
    if groups.version == 1:
        lines += [cgroup_line(n, mount=True) for n in CGROUP_CONTROLLERS]
    missing = [n for n in CGROUP_CONTROLLERS if n not in groups.controllers]
    unmounted = [
        n
        for n in CGROUP_CONTROLLERS
        if groups.version == 1 and n in groups.controllers and n not in groups.mounted
    ]
    if not missing and not unmounted:
        return [
            finding(
                "validate.cgroups",
                OK,
                "host",
                f"cgroup v{groups.version}: every controller libvirt uses is there",
                validates=lines,
            )
        ]
    problems = [f"missing: {', '.join(missing)}"] if missing else []
    problems += [f"not mounted: {', '.join(unmounted)}"] if unmounted else []
    return [
        finding(
            "validate.cgroups",
            WARNING,
            "host",
            f"cgroup controllers {'; '.join(problems)}",
            "libvirt limits and accounts guests' CPU, memory and I/O through these controllers; "
            "without them tuning (vcpu quotas, memtune, blkiotune) fails.",
            "enable the controllers on the kernel command line (cgroup_enable=...) or mount "
            "them; on cgroup v2 enable them in the parent's cgroup.subtree_control",
            validates=lines,
        )
    ]


def iommu(root: Path) -> list[Finding]:
    flags = lf.cpu_flags(root)
    table = "DMAR" if "vmx" in flags else "IVRS" if "svm" in flags else None
    if table is None:
        return [
            finding(
                "validate.iommu",
                INFO,
                "host",
                "unknown whether this platform has an IOMMU (not an Intel VT-x or AMD-V CPU)",
                "An IOMMU is needed only to pass PCI devices through to guests.",
                None,
                validates=[IOMMU],
            )
        ]
    if not lf.acpi_table(root, table):
        return [
            finding(
                "validate.iommu",
                INFO,
                "host",
                f"no ACPI {table} table: the IOMMU is off in the firmware or absent",
                "An IOMMU is needed only to pass PCI devices through to guests.",
                "enable VT-d / AMD-Vi in the firmware",
                validates=[IOMMU],
            )
        ]
    groups = lf.iommu_groups(root)
    if groups:
        return [
            finding(
                "validate.iommu",
                OK,
                "host",
                f"IOMMU on: {groups} IOMMU groups",
                validates=[IOMMU, IOMMU_KERNEL],
            )
        ]
    option = "intel_iommu=on" if table == "DMAR" else "amd_iommu=on"
    return [
        finding(
            "validate.iommu",
            WARNING,
            "host",
            "the firmware has an IOMMU but the kernel did not enable it",
            "PCI passthrough (VFIO) needs the kernel's IOMMU groups.",
            f"add {option} iommu=pt to the kernel command line (GRUB_CMDLINE_LINUX) and reboot",
            validates=[IOMMU, IOMMU_KERNEL],
        )
    ]


def secure_guest(root: Path) -> list[Finding]:
    flags = lf.cpu_flags(root)
    sev = (lf.read(root, "sys/module/kvm_amd/parameters/sev") or "").strip() in ("1", "Y")
    if "sev" in flags and sev:
        return [
            finding("validate.secure-guest", OK, "host", "AMD SEV is available", validates=[SECURE])
        ]
    if "sev" in flags:
        return [
            finding(
                "validate.secure-guest",
                INFO,
                "host",
                "the CPU has AMD SEV but kvm_amd does not enable it",
                "Confidential (memory-encrypted) guests need SEV enabled in kvm_amd.",
                "modprobe kvm_amd sev=1 (options kvm_amd sev=1 in /etc/modprobe.d)",
                validates=[SECURE],
            )
        ]
    return [
        finding(
            "validate.secure-guest",
            INFO,
            "host",
            "no secure (memory-encrypted) guest support found on this platform",
            "Only confidential computing needs it (AMD SEV, IBM PV).",
            None,
            validates=[SECURE],
        )
    ]


def checks(root: Path, device: Path) -> list[Finding]:
    """Every check of ``virt-host-validate qemu``, as findings."""
    return [
        *hardware(root),
        *kvm_device(root, device),
        *devices(root),
        *cgroups(root),
        *iommu(root),
        *secure_guest(root),
    ]
