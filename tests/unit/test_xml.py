"""Domain XML: golden files, libvirt's own parser (test:// driver), unknown XML round trips."""

from __future__ import annotations

import os
from pathlib import Path

import libvirt
import pytest

from tests.unit.golden_specs import CASES
from virtkit.services.domainbuilder import build_domain
from virtkit.xml.base import XMLParseError
from virtkit.xml.capabilities import Capabilities
from virtkit.xml.domain import Disk, Domain, Tag


@pytest.fixture(autouse=True)
def _fixed_graphics_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Golden files need the same XML every time: the random display password is fixed."""
    monkeypatch.setattr("virtkit.services.domainbuilder.graphics_password", lambda kind: "golden")


GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("VIRTKIT_REGENERATE_GOLDEN") == "1"


@pytest.mark.parametrize("case", sorted(CASES))
def test_domain_matches_golden_file(case: str) -> None:
    spec, plan = CASES[case]
    xml = build_domain(spec, plan).to_xml()
    golden = GOLDEN / f"{case}.xml"
    if REGENERATE:
        golden.write_text(xml)
    assert xml == golden.read_text(), "regenerate with VIRTKIT_REGENERATE_GOLDEN=1 if intended"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_xml_is_accepted_by_libvirt(case: str, tmp_path: Path) -> None:
    """libvirt's generic domain parser (through the test driver) accepts every golden file."""
    dom = Domain.parse((GOLDEN / f"{case}.xml").read_text())
    dom.type = "test"  # the test driver only runs type='test'; all else is parsed as usual
    dom.emulator = None
    node = tmp_path / "node.xml"
    node.write_text("<node/>")
    conn = libvirt.open(f"test://{node}")
    try:
        defined = conn.defineXML(dom.to_xml())
        back = Domain.parse(defined.XMLDesc(0))
    finally:
        conn.close()
    assert back.name == dom.name
    assert back.memory_kib == dom.memory_kib and back.vcpu == dom.vcpu
    assert [d.target_dev for d in back.disks] == [d.target_dev for d in dom.disks]
    assert [d.source for d in back.disks] == [d.source for d in dom.disks]
    assert back.tag_names == dom.tag_names
    assert back.owned_disk_paths == dom.owned_disk_paths


UNKNOWN = """<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>keep</name>
  <memory unit='KiB'>262144</memory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><smbios mode='sysinfo'/></os>
  <sysinfo type='smbios'><system><entry name='serial'>ds=nocloud</entry></system></sysinfo>
  <devices>
    <disk type='file' device='disk' snapshot='external'>
      <driver name='qemu' type='qcow2' iothread='1'/>
      <source file='/img/a.qcow2'><seclabel model='dac' relabel='no'/></source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <watchdog model='i6300esb' action='reset'/>
  </devices>
  <qemu:commandline><qemu:arg value='-nic'/></qemu:commandline>
</domain>"""


def test_unknown_xml_survives_a_round_trip() -> None:
    dom = Domain.parse(UNKNOWN)
    dom.memory_kib = 524288
    dom.vcpu = 2
    disk = dom.disks[0]
    disk.driver_cache = "none"
    tag = Tag()
    tag.name = "kept"
    dom.ensure_virtkit_metadata().tags.append(tag)
    out = dom.to_xml()
    again = Domain.parse(out)
    assert again.memory_kib == 524288 and again.vcpu == 2
    assert again.disks[0].driver_cache == "none" and again.tag_names == ["kept"]
    for survivor in (
        '<smbios mode="sysinfo" />',
        "ds=nocloud",
        'snapshot="external"',
        'iothread="1"',
        'relabel="no"',
        '<watchdog model="i6300esb"',
        '<qemu:arg value="-nic" />',
        "xmlns:qemu=",
    ):
        assert survivor in out, survivor


def test_children_add_and_remove() -> None:
    dom = Domain.parse(UNKNOWN)
    new = Disk()
    new.type = "file"
    new.device = "disk"
    new.source_file = "/img/b.qcow2"
    new.target_dev = "vdb"
    dom.disks.append(new)
    assert [d.target_dev for d in dom.disks] == ["vda", "vdb"]
    # appended next to its siblings, before the watchdog
    devices = dom.node.find("devices")
    assert devices is not None and [c.tag for c in devices] == ["disk", "disk", "watchdog"]
    dom.disks.remove(dom.disks[0])
    assert [d.target_dev for d in dom.disks] == ["vdb"]
    dom.description = "x"
    dom.description = None
    assert dom.node.find("description") is None


def test_parse_errors_are_clear() -> None:
    with pytest.raises(XMLParseError, match="malformed XML"):
        Domain.parse("<domain><name>x</domain>")
    with pytest.raises(XMLParseError, match="expected <domain>, got <pool>"):
        Domain.parse("<pool/>")


def test_capabilities_from_the_test_driver() -> None:
    conn = libvirt.open("test:///default")
    try:
        caps = Capabilities.parse(conn.getCapabilities())
    finally:
        conn.close()
    assert caps.host_arch == "i686"
    assert caps.domain_types("i686") == ["test"]
    assert caps.guest_arch("aarch64") is None


MACHINES = """<capabilities><host><cpu><arch>x86_64</arch></cpu></host><guest>
  <os_type>hvm</os_type>
  <arch name='x86_64'>
    <machine maxCpus='255'>pc-i440fx-7.2</machine>
    <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
    <domain type='qemu'/>
    <domain type='kvm'><machine canonical='pc-q35-7.2' maxCpus='288'>q35</machine></domain>
  </arch></guest></capabilities>"""


def test_machine_names_per_domain_type() -> None:
    caps = Capabilities.parse(MACHINES)
    assert caps.domain_types("x86_64") == ["qemu", "kvm"]
    assert caps.machine_names("x86_64", "qemu") == ["pc-i440fx-7.2", "pc"]
    assert caps.machine_names("x86_64", "kvm") == ["pc-i440fx-7.2", "pc", "q35", "pc-q35-7.2"]


def test_free_root_ports_counts_ports_no_device_sits_behind() -> None:
    from virtkit.services.domainbuilder import add_root_ports, free_root_ports
    from virtkit.xml.domain import Domain

    dom = Domain.parse(
        "<domain type='qemu'><name>x</name><devices>"
        "<controller type='pci' index='0' model='pcie-root'/>"
        "<controller type='pci' index='1' model='pcie-root-port'>"
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/></controller>"
        "<controller type='pci' index='2' model='pcie-root-port'>"
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x1'/></controller>"
        "<controller type='pci' index='3' model='pcie-root-port'/>"
        "<disk type='file' device='disk'><target dev='vda' bus='virtio'/>"
        "<address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></disk>"
        "<memballoon model='virtio'>"
        "<address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></memballoon>"
        "</devices></domain>"
    )
    assert free_root_ports(dom) == 1  # port 2; ports 1 and 3 hold the disk and the balloon
    add_root_ports(dom, 3)
    ports = [c for c in dom.controllers if c.model == "pcie-root-port"]
    assert len(ports) == 6 and all(p.index is None for p in ports[3:])
