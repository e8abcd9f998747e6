"""Networks: the XML each kind makes (golden files, accepted by libvirt's parser), spec checks,
and the service's rules on libvirt's test driver (overlap, reservations, DNS, in use, MACs)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from virtkit import Client, Settings
from virtkit.errors import AlreadyExists, InUse, InvalidInput, NotFound, VirtkitError
from virtkit.services.networks import build_network
from virtkit.specs import NetworkSpec, parse_network_spec, validate_mac
from virtkit.xml.network import Network

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("VIRTKIT_REGENERATE_GOLDEN") == "1"

KINDS: dict[str, dict[str, object]] = {
    "net-nat": {"name": "vknat", "kind": "nat", "ipv4": "198.18.1.1/24", "domain": "lab",
                "ipv6": "fd00:1::1/64", "dhcp6_start": "fd00:1::100", "dhcp6_end": "fd00:1::1ff"},
    "net-route": {"name": "vkroute", "kind": "route", "ipv4": "198.18.2.1/24",
                  "dhcp_start": "198.18.2.100", "dhcp_end": "198.18.2.150", "interface": "eth0"},
    "net-isolated": {"name": "vkiso", "kind": "isolated", "ipv4": "198.18.3.254/24"},
    "net-open": {"name": "vkopen", "kind": "open", "ipv4": "198.18.4.1/24", "dhcp": False},
    "net-bridge": {"name": "vkbr", "kind": "bridge", "bridge": "br0"},
    "net-macvtap": {"name": "vkmv", "kind": "macvtap", "interface": "eth0", "mode": "vepa"},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(KINDS))
def test_network_xml_matches_golden_file_and_libvirt_accepts_it(case: str, tmp_path: Path) -> None:
    xml = build_network(parse_network_spec(KINDS[case])).to_xml()
    golden = GOLDEN / f"{case}.xml"
    if REGENERATE:
        golden.write_text(xml)
    assert xml == golden.read_text(), "regenerate with VIRTKIT_REGENERATE_GOLDEN=1 if intended"
    node = tmp_path / "node.xml"
    node.write_text("<node/>")
    conn = libvirt.open(f"test://{node}")
    try:
        back = Network.parse(conn.networkDefineXML(xml).XMLDesc(0))
    finally:
        conn.close()
    mine = Network.parse(xml)
    assert back.forward_mode == mine.forward_mode
    assert [(i.address, i.prefix) for i in back.ips] == [(i.address, i.prefix) for i in mine.ips]


def test_default_dhcp_range_follows_the_host_address() -> None:
    def spec(ipv4: str) -> NetworkSpec:
        return parse_network_spec({"name": "n", "ipv4": ipv4})

    assert spec("198.18.1.1/24").ipv4_range() == ("198.18.1.2", "198.18.1.254")
    assert spec("198.18.3.254/24").ipv4_range() == ("198.18.3.1", "198.18.3.253")
    assert spec("198.18.1.1/30").ipv4_range() == ("198.18.1.2", "198.18.1.2")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ipv4": "198.18.1.300/24"}, "not an address with a prefix"),
        ({"ipv4": "198.18.1.1"}, "needs a prefix length"),
        ({"ipv4": "198.18.1.0/24"}, "network or broadcast"),
        ({"ipv4": "198.18.1.1/31"}, "leaves no room"),
        ({"ipv4": "fd00::1/64"}, "not an IPv4 address"),
        ({"ipv4": "198.18.1.1/24", "dhcp_start": "198.18.2.10", "dhcp_end": "198.18.2.20"},
         "outside the subnet"),
        ({"ipv4": "198.18.1.1/24", "dhcp_start": "198.18.1.50", "dhcp_end": "198.18.1.10"},
         "reversed"),
        ({"ipv4": "198.18.1.1/24", "dhcp_start": "198.18.1.1", "dhcp_end": "198.18.1.10"},
         "host's own address"),
        ({"ipv4": "198.18.1.1/24", "dhcp_start": "198.18.1.10"}, "needs both"),
        ({"kind": "nat"}, "needs an IPv4 or IPv6 subnet"),
        ({"kind": "bridge"}, "needs the host bridge"),
        ({"kind": "macvtap"}, "needs the host interface"),
        ({"kind": "bridge", "bridge": "br0", "ipv4": "198.18.1.1/24"}, "no subnet of its own"),
        ({"kind": "macvtap", "interface": "eth0", "mode": "sideways"}, "mode"),
        ({"kind": "wormhole"}, "kind"),
        ({"name": "bad name!", "kind": "isolated"}, "network name"),
        ({"ipv4": "198.18.1.1/24", "colour": "red"}, "colour"),
    ],
)  # fmt: skip
def test_bad_network_specs(data: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_network_spec({"name": "vkbad", **data})


@pytest.mark.parametrize(
    ("mac", "ok"),
    [("52:54:00:AB:cd:01", "52:54:00:ab:cd:01"), ("52-54-00-ab-cd-01", "52:54:00:ab:cd:01"),
     ("52:54:00:ab:cd", None), ("zz:54:00:ab:cd:01", None), ("01:00:5e:00:00:01", None)],
)  # fmt: skip
def test_mac_validation(mac: str, ok: str | None) -> None:
    if ok:
        assert validate_mac(mac) == ok
    else:
        with pytest.raises(InvalidInput, match="MAC"):
            validate_mac(mac)


@pytest.fixture
def vk(tmp_path: Path) -> Iterator[Client]:
    node = tmp_path / "node.xml"
    node.write_text("<node/>")
    client = Client(settings=Settings(uri=f"test://{node}", cache_dir=tmp_path / "c"))
    yield client
    client.close()


def test_service_rules_on_the_test_driver(vk: Client) -> None:
    nets = vk.networks
    made = nets.create(parse_network_spec({"name": "vkt1", "kind": "isolated",
                                           "ipv4": "198.18.5.1/24"}))  # fmt: skip
    assert made.active and made.autostart and made.kind == "isolated"
    assert made.dhcp_ranges == [("198.18.5.2", "198.18.5.254")]
    with pytest.raises(AlreadyExists, match="already exists"):
        nets.create(parse_network_spec({"name": "vkt1", "kind": "isolated"}))
    with pytest.raises(InvalidInput, match=r"198.18.5.128/25 overlaps 198.18.5.0/24 of network"):
        nets.create(parse_network_spec({"name": "vkt2", "ipv4": "198.18.5.129/25"}))
    assert "vkt2" not in [n.name for n in nets.list()]
    # reservations
    r = nets.reserve("vkt1", "52:54:00:00:00:01", "198.18.5.10", "web")
    assert (r.mac, r.ip, r.name) == ("52:54:00:00:00:01", "198.18.5.10", "web")
    assert [x.ip for x in nets.get("vkt1").reservations] == ["198.18.5.10"]
    with pytest.raises(AlreadyExists, match="already has a reservation"):
        nets.reserve("vkt1", "52:54:00:00:00:01", "198.18.5.11")
    with pytest.raises(AlreadyExists, match="already reserved"):
        nets.reserve("vkt1", "52:54:00:00:00:02", "198.18.5.10")
    with pytest.raises(InvalidInput, match="outside the subnets"):
        nets.reserve("vkt1", "52:54:00:00:00:03", "198.18.6.10")
    with pytest.raises(InvalidInput, match="own, network or broadcast"):
        nets.reserve("vkt1", "52:54:00:00:00:03", "198.18.5.1")
    with pytest.raises(InvalidInput, match="invalid MAC"):
        nets.reserve("vkt1", "52:54:00:00:00", "198.18.5.12")
    assert nets.unreserve("vkt1", "52:54:00:00:00:01").ip == "198.18.5.10"
    assert nets.get("vkt1").reservations == []
    with pytest.raises(NotFound, match="no reservation"):
        nets.unreserve("vkt1", "52:54:00:00:00:01")
    # DNS
    nets.dns_add("vkt1", "198.18.5.20", ["db", "db.lab"])
    assert [(d.ip, d.hostnames) for d in nets.get("vkt1").dns_hosts] == [
        ("198.18.5.20", ["db", "db.lab"])
    ]
    with pytest.raises(AlreadyExists):
        nets.dns_add("vkt1", "198.18.5.20", ["db2"])
    nets.dns_remove("vkt1", "198.18.5.20")
    assert nets.get("vkt1").dns_hosts == []
    # in use: a VM with a NIC on it (hot-plug itself is tested against a real libvirtd)
    mac = "52:54:00:aa:bb:cc"
    vk.host.define(
        "<domain type='test'><name>vktest-netuser</name><memory>65536</memory>"
        "<os><type>hvm</type></os><devices><interface type='network'>"
        f"<mac address='{mac}'/><source network='vkt1'/><model type='virtio'/></interface>"
        "</devices></domain>"
    )
    assert [(n.mac, n.source, n.link) for n in vk.nics.list("vktest-netuser")] == [
        (mac, "vkt1", "up")
    ]
    assert vk.nics.new_mac().startswith("52:54:00:") and vk.nics.new_mac() != mac
    with pytest.raises(InvalidInput, match="already used by a VM"):
        vk.nics.add("vktest-netuser", network="vkt1", mac=mac.upper())
    with pytest.raises(InvalidInput, match="exactly one"):
        vk.nics.add("vktest-netuser")
    with pytest.raises(NotFound, match="no network named 'nope'"):
        vk.nics.add("vktest-netuser", network="nope")
    with pytest.raises(InvalidInput, match="unknown NIC model"):
        vk.nics.add("vktest-netuser", network="vkt1", model="ne2000")
    with pytest.raises(InUse, match="used by vktest-netuser"):
        nets.delete("vkt1")
    assert nets.get("vkt1").vms == ["vktest-netuser"]
    vk.host.lookup("vktest-netuser").undefine()
    nets.delete("vkt1")
    assert nets.list() == []
    with pytest.raises(VirtkitError, match="no network named"):
        nets.get("vkt1")
