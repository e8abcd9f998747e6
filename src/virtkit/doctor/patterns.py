"""Known failure messages of QEMU and libvirt, mapped to a cause and a fix (pure).

The texts come from QEMU 7.x and libvirt 9.x (their logs and errors when a VM does not
start); each pattern captures the one detail the fix needs (a path, a port, a model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Pattern:
    check: str
    regex: re.Pattern[str]
    cause: str  # may use {1}, {2}: the regex's groups
    fix: str


def _p(check: str, regex: str, cause: str, fix: str) -> Pattern:
    return Pattern(check, re.compile(regex, re.IGNORECASE), cause, fix)


PATTERNS: tuple[Pattern, ...] = (
    _p(
        "start.missing-file",
        r"Cannot access storage file '([^']+)'|Could not open '([^']+)': No such file",
        "a file the VM needs is missing: {0}",
        "restore the file, or point the VM at another (virtkit vm disk / virsh edit)",
    ),
    _p(
        "start.missing-kernel",
        r"(?:could not load kernel|Could not open option rom|unable to (?:access|open) "
        r"(?:kernel|initrd)) '?([^':\n]+)'?",
        "the kernel or initrd the VM boots is missing or unreadable: {0}",
        "restore the kernel file, or change <kernel>/<initrd> in the VM's definition",
    ),
    _p(
        "start.permission",
        r"Could not open '([^']+)': Permission denied|Permission denied.*'(/[^']+)'",
        "QEMU may not open {0}",
        "give QEMU's user (libvirt-qemu) access to the file and its directories, or keep VM "
        "files under /var/lib/libvirt/images",
    ),
    _p(
        "start.apparmor",
        r'apparmor="DENIED".*name="([^"]+)"',
        "AppArmor denied QEMU access to {0}",
        "move the file under /var/lib/libvirt, or allow it in "
        "/etc/apparmor.d/local/abstractions/libvirt-qemu",
    ),
    _p(
        "start.port-in-use",
        r"Failed to bind socket.*?:(\d+)|Address already in use.*?(\d{2,5})|"
        r"port (\d+) .*already in use",
        "the display or chardev port {0} is already in use",
        "give the graphics autoport='yes' (virtkit does), or stop what holds the port",
    ),
    _p(
        "start.cpu-model",
        r"(?:guest CPU doesn't match specification.*|unsupported configuration: CPU model "
        r"'?([\w-]+)'? is not supported|the CPU is incompatible with host CPU.*|"
        r"host doesn't support requested feature: (\S+))",
        "the host cannot provide the VM's CPU model or feature {0}",
        "use <cpu mode='host-model'/> (or a model from `virsh domcapabilities`); under TCG use "
        "a named model such as qemu64",
    ),
    _p(
        "start.hugepages",
        r"(?:unable to map backing store for guest RAM|hugepages|HugeTLB).*?"
        r"(Cannot allocate memory|no free|not enough)",
        "the VM's hugepages are not reserved ({0})",
        "reserve them: echo N > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages "
        "(`virtkit doctor --fix` does)",
    ),
    _p(
        "start.memory",
        r"(?:cannot set up guest memory|Cannot allocate memory|failed to allocate)\s*'?([^'\n]*)",
        "the host had not enough free memory for the VM {0}",
        "free memory (stop VMs, enable KSM) or give the VM less (virtkit vm set --memory)",
    ),
    _p(
        "start.kvm-denied",
        r"Could not access KVM kernel module: (Permission denied|No such file)",
        "QEMU could not open /dev/kvm: {0}",
        "virtkit host fix-kvm (root:kvm 0660), or use domain type 'qemu'",
    ),
    _p(
        "start.network",
        r"Network not found: no network with matching name '([^']+)'|"
        r"network '([^']+)' is not active",
        "the VM's network {0} is missing or not active",
        "virtkit net start NAME (or attach the NIC to another network)",
    ),
    _p(
        "start.pool",
        r"storage pool '([^']+)' containing volume .* is not active",
        "the storage pool {0} that holds the VM's volume is not active",
        "virtkit pool start NAME",
    ),
)


@dataclass(frozen=True)
class Match:
    check: str
    cause: str
    fix: str
    line: str


def match(text: str) -> list[Match]:
    """Every known failure in ``text`` (a QEMU log, a libvirt error), newest line first, one
    per check."""
    found: dict[str, Match] = {}
    for line in reversed(text.splitlines()):
        for pattern in PATTERNS:
            if pattern.check in found:
                continue
            hit = pattern.regex.search(line)
            if hit is None:
                continue
            detail = next((g for g in hit.groups() if g), "").strip()
            found[pattern.check] = Match(
                pattern.check, pattern.cause.format(detail or "?"), pattern.fix, line.strip()
            )
    return list(found.values())
