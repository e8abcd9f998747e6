"""The plan of a create: templates resolved once, a template's kernel, disks in the user's order."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtkit.errors import AlreadyExists
from virtkit.services.domainbuilder import BuildPlan, ResolvedDisk
from virtkit.services.vmfiles import VMFiles
from virtkit.services.vmplan import CreateChecks, with_template_boot
from virtkit.specs import ImageInfo, parse_vm_spec


def _template(name: str, boot: dict[str, str] | None = None) -> ImageInfo:
    return ImageInfo(
        pool="images", name=name, path=f"/images/{name}", format="qcow2", capacity=1 << 30,
        allocation=0, template=True, boot=boot,
    )  # fmt: skip


class _Images:
    def __init__(self) -> None:
        self.resolved: list[str] = []

    def resolve_template(self, ref: str, default_pool: str) -> ImageInfo:
        self.resolved.append(ref)
        return _template(ref, {"kernel": "/boot/k", "cmdline": "console=ttyS0"})


class _TakenHost:
    def exists(self, name: str) -> bool:
        return True


def test_each_template_is_resolved_once() -> None:
    images = _Images()
    spec = parse_vm_spec(
        {
            "name": "web1",
            "disks": [{"image": "base"}, {"size": "1G"}, {"image": "data"}],
            "cloud_init": {"user": "admin"},
        }
    )
    checks = CreateChecks(_TakenHost(), None, images, VMFiles())  # type: ignore[arg-type]
    with pytest.raises(AlreadyExists, match="a VM named 'web1' already exists"):
        checks.prepare(spec, host_keys=True)
    assert images.resolved == ["base", "data"]


def test_a_templates_kernel_unless_the_spec_names_one() -> None:
    spec = parse_vm_spec({"name": "x", "disks": [{"image": "base"}]})
    booted = with_template_boot(spec, _template("base", {"kernel": "/k", "initrd": "/i"}))
    assert (booted.kernel, booted.initrd, booted.cmdline) == ("/k", "/i", None)
    assert with_template_boot(spec, _template("base")) is spec  # it has a boot loader
    own = parse_vm_spec({"name": "x", "kernel": "/mine", "disks": [{"image": "base"}]})
    assert with_template_boot(own, _template("base", {"kernel": "/k"})).kernel == "/mine"


def test_new_disks_take_their_places_among_existing_ones() -> None:
    spec = parse_vm_spec(
        {"name": "x", "kernel": "/k", "cdrom": "/iso/a.iso",
         "disks": [{"path": "/data/old.raw"}, {"size": "1G"}, {"path": "/data/old2.raw"}]}
    )  # fmt: skip
    old, old2 = ResolvedDisk("/data/old.raw", "raw", "virtio"), ResolvedDisk("/o2", "raw", "sata")
    cdrom = ResolvedDisk("/iso/a.iso", "raw", "sata", device="cdrom", readonly=True)
    plan = BuildPlan(domain_type="qemu", machine="q35", disks=[old, old2, cdrom])
    new = ResolvedDisk(str(Path("/pool/x-disk0.qcow2")), "qcow2", "virtio", owned=True)
    seed = ResolvedDisk("/pool/x-seed.iso", "raw", "scsi", device="cdrom", owned=True)
    assert plan.with_new_disks(spec, [new], seed).disks == [old, new, old2, cdrom, seed]
    assert plan.disks == [old, old2, cdrom]  # the plan itself is unchanged (frozen)


def test_new_vms_get_room_for_live_vcpu_hot_plug() -> None:
    from virtkit.errors import InvalidInput
    from virtkit.services.vmlimits import check_max_vcpus, default_max_vcpus

    assert [default_max_vcpus(n, 288) for n in (1, 2, 4)] == [2, 4, 8]
    assert default_max_vcpus(3, 4) == 4 and default_max_vcpus(4, 4) == 4  # the machine's limit
    assert check_max_vcpus(2, 2, 288, "q35") == 2  # asked for: no hot-plug room
    with pytest.raises(InvalidInput, match="maximum of 300 vCPUs is more than machine type q35"):
        check_max_vcpus(2, 300, 288, "q35")
    with pytest.raises(InvalidInput, match="'max_vcpus' \\(1\\) is less than 'vcpus' \\(2\\)"):
        parse_vm_spec({"name": "x", "vcpus": 2, "max_vcpus": 1})
