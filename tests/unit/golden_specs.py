"""The specs and plans behind the golden domain XML files (tests/unit/golden/*.xml)."""

from __future__ import annotations

from virtkit.services.domainbuilder import BuildPlan, ResolvedDisk
from virtkit.specs import VMSpec, parse_vm_spec

CASES: dict[str, tuple[VMSpec, BuildPlan]] = {
    "kernel-boot-tcg": (
        parse_vm_spec(
            {
                "name": "tiny",
                "memory": "128M",
                "kernel": "/boot/vmlinuz",
                "initrd": "/boot/initrd.img",
                "cmdline": "console=ttyS0",
                "tags": ["demo", "env=test"],
                "description": "tiny guest",
                "nics": [{"user": True, "ssh_forward": 2222}],
                "cloud_init": {"user": "admin"},
            }
        ),
        BuildPlan(
            domain_type="qemu",
            machine="q35",
            macs=["52:54:00:00:00:09"],
            emulator="/usr/bin/qemu-system-x86_64",
            serial_log="/var/log/libvirt/qemu/tiny-serial0.log",
        ),
    ),
    "disk-cdrom-vnc-kvm": (
        parse_vm_spec(
            {
                "name": "web1",
                "vcpus": 4,
                "memory": "4G",
                "graphics": "vnc",
                "cdrom": "/iso/debian.iso",
                "disks": [{"size": "20G"}, {"path": "/data/web1-data.raw"}],
                "nics": [
                    {"network": "default"},
                    {"bridge": "br0", "model": "e1000e"},
                    {"direct": "eth1", "mode": "vepa", "mac": "52:54:00:AA:00:03"},
                ],
            }
        ),
        BuildPlan(
            domain_type="kvm",
            machine="q35",
            cpu="host-passthrough",
            max_vcpus=8,  # room for live vCPU hot-plug: <vcpu current='4'>8</vcpu>
            macs=["52:54:00:aa:00:01", "52:54:00:aa:00:02", "52:54:00:aa:00:03"],
            disks=[
                ResolvedDisk(
                    "/var/lib/libvirt/images/web1-disk0.qcow2", "qcow2", "virtio", owned=True
                ),
                ResolvedDisk("/data/web1-data.raw", "raw", "virtio"),
                ResolvedDisk("/iso/debian.iso", "raw", "sata", device="cdrom", readonly=True),
            ],
            serial_log="/var/log/libvirt/qemu/web1-serial0.log",
        ),
    ),
    "spice-scsi-model-pc": (
        parse_vm_spec(
            {
                "name": "win",
                "vcpus": 2,
                "memory": 2048,
                "graphics": "spice",
                "serial": False,
                "machine": "pc",
                "cpu": "Skylake-Client",
                "boot": ["cdrom", "hd"],
                "cdrom": "/iso/win.iso",
                "disks": [{"path": "/dev/vg0/win", "bus": "scsi"}],
            }
        ),
        BuildPlan(
            domain_type="kvm",
            machine="pc",
            cpu="Skylake-Client",
            disks=[
                ResolvedDisk("/dev/vg0/win", "raw", "scsi"),
                ResolvedDisk("/iso/win.iso", "raw", "ide", device="cdrom", readonly=True),
            ],
        ),
    ),
}
