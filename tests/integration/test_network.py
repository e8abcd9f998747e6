"""Networks for real, inside a test host (its own network namespace and libvirtd): a tiny guest
gets a DHCP lease and `vm ip` reports exactly the address the guest prints; a reservation gives
the reserved address on the next DHCP request; a hot-plugged NIC appears in the guest; link down
is seen by the guest; the host pings the guest; stale leases are not current; bad input."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HostBed, run_host_cli, wait_for_log
from tests.testbed.hosts import TestHosts
from virtkit import Client
from virtkit.errors import InUse
from virtkit.services.tinyguest import IP_MARKER, NET_MARKER
from virtkit.specs import parse_network_spec, parse_vm_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def hvk(net_host: HostBed) -> Iterator[Client]:
    client = net_host.client()
    made_vms: list[str] = []
    client.made_vms = made_vms  # type: ignore[attr-defined]
    yield client
    for name in made_vms:
        if client.host.exists(name):
            client.vms.delete(name, force=True, remove_storage=True)
    for net in client.networks.list():
        if net.name.startswith("vktest-"):
            client.host.networks.undefine(net.name)
    client.close()


def tiny(hb: HostBed, vk: Client, name: str) -> None:
    spec = {"name": name, "memory": "128M", "vcpus": 1, "kernel": hb.guest.kernel,
            "initrd": hb.guest.initrd, "cmdline": hb.guest.cmdline}  # fmt: skip
    vk.vms.create(parse_vm_spec(spec))
    vk.made_vms.append(name)  # type: ignore[attr-defined]


def guest_ip(log: str, nic: str = "eth0") -> str:
    found = re.findall(rf"{IP_MARKER} {nic} (\S+)", log)
    assert found, log[-2000:]
    return str(found[-1])


def test_lease_reservation_link_and_hotplug(net_host: HostBed, hvk: Client) -> None:
    hb, name = net_host, "vktest-netvm"
    log = hb.log_dir / f"{name}-serial0.log"
    nat = run_host_cli(hb, "net", "create", "vktest-nat", "--kind", "nat",
                       "--ipv4", "198.18.10.1/24")  # fmt: skip
    assert nat.returncode == 0, nat.stderr
    assert hvk.networks.get("vktest-nat").active
    tiny(hb, hvk, name)
    added = run_host_cli(hb, "vm", "nic", "add", name, "--network", "vktest-nat")
    assert added.returncode == 0, added.stderr
    mac = hvk.nics.list(name)[0].mac
    hvk.vms.start(name)
    address = guest_ip(wait_for_log(log, IP_MARKER))
    assert address.startswith("198.18.10.") and address.endswith("/24")
    # virtkit reports exactly the address the guest printed, from the lease
    deadline = time.monotonic() + 30
    while True:
        shown = run_host_cli(hb, "vm", "ip", name, "--json")
        assert shown.returncode == 0, shown.stderr
        addrs = json.loads(shown.stdout)[name]
        if addrs:
            break
        assert time.monotonic() < deadline, "no lease reported"
        time.sleep(0.5)
    assert [(a["ip"] + "/" + str(a["prefix"]), a["mac"], a["source"]) for a in addrs] == [
        (address, mac, "lease")
    ]
    listed = run_host_cli(hb, "vm", "list")
    assert address.split("/")[0] in listed.stdout, listed.stdout
    # the host (inside its namespace) reaches the guest
    ping = hb.host.run("busybox", "ping", "-c", "1", "-W", "5", address.split("/")[0], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # a reservation, live: the guest gets it on its next DHCP request (link down, then up)
    reserved = run_host_cli(hb, "net", "reserve", "vktest-nat", "--mac", mac,
                            "--ip", "198.18.10.77", "--name", "web")  # fmt: skip
    assert reserved.returncode == 0, reserved.stderr
    assert hvk.networks.get("vktest-nat").active  # not restarted
    down = run_host_cli(hb, "vm", "nic", "set-link", name, mac, "down")
    assert down.returncode == 0 and "link down" in down.stdout, down.stderr
    wait_for_log(log, f"{NET_MARKER} [eth0:down]")
    assert hvk.nics.list(name)[0].link == "down"
    assert run_host_cli(hb, "vm", "nic", "set-link", name, mac, "up").returncode == 0
    wait_for_log(log, f"{IP_MARKER} eth0 198.18.10.77/24")
    deadline = time.monotonic() + 30
    while [a.ip for a in hvk.nics.ip(name)] != ["198.18.10.77"]:
        assert time.monotonic() < deadline, hvk.nics.ip(name)
        time.sleep(0.5)
    # a NIC hot-plugged into the running guest on an isolated network appears, with an address
    iso = hvk.networks.create(parse_network_spec({"name": "vktest-iso", "kind": "isolated",
                                                  "ipv4": "198.18.11.1/24"}))  # fmt: skip
    assert iso.active and iso.kind == "isolated"
    second = hvk.nics.add(name, network="vktest-iso")
    wait_for_log(log, f"{NET_MARKER} [eth0:up eth1:up]")
    assert guest_ip(wait_for_log(log, f"{IP_MARKER} eth1"), "eth1").startswith("198.18.11.")
    with pytest.raises(InUse, match=f"used by {name}"):
        hvk.networks.delete("vktest-iso")
    refused = run_host_cli(hb, "net", "delete", "vktest-iso")
    assert refused.returncode == 1 and name in refused.stderr
    hvk.nics.remove(name, second.mac)
    wait_for_log(log, f"{NET_MARKER} [eth0:up]", count=2)
    assert [n.mac for n in hvk.nics.list(name)] == [mac]
    assert run_host_cli(hb, "net", "delete", "vktest-iso").returncode == 0


def test_a_lease_from_an_earlier_boot_is_not_current(net_host: HostBed, hvk: Client) -> None:
    hb, name = net_host, "vktest-stale"
    log = hb.log_dir / f"{name}-serial0.log"
    hvk.networks.create(parse_network_spec({"name": "vktest-stalenet", "kind": "isolated",
                                            "ipv4": "198.18.12.1/24"}))  # fmt: skip
    tiny(hb, hvk, name)
    mac = hvk.nics.add(name, network="vktest-stalenet").mac
    hvk.vms.start(name)
    wait_for_log(log, IP_MARKER)
    deadline = time.monotonic() + 30
    while not hvk.nics.ip(name):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    hvk.vms.stop(name)
    leases = run_host_cli(hb, "net", "leases", "vktest-stalenet", "--json")
    assert [le["mac"] for le in json.loads(leases.stdout)] == [mac]  # still there
    # the next boot with the cable pulled: no DHCP, so the old lease is all there is
    hvk.nics.set_link(name, mac, up=False)
    hvk.vms.start(name)
    wait_for_log(log, f"{NET_MARKER} [eth0:down]")
    assert [le.mac for le in hvk.networks.leases("vktest-stalenet")] == [mac]
    assert hvk.nics.ip(name) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ipv4", "198.18.20.1/33"], "not an address with a prefix"),
        (["--ipv4", "198.18.20.1/24", "--dhcp-start", "198.18.21.2", "--dhcp-end",
          "198.18.21.9"], "outside the subnet"),
        (["--ipv4", "198.18.20.1/24", "--dhcp-start", "198.18.20.9", "--dhcp-end",
          "198.18.20.2"], "reversed"),
        (["--kind", "bridge", "--bridge", "vknobr0"], "no bridge named 'vknobr0'"),
        (["--kind", "macvtap", "--interface", "vknoeth9"], "no interface named 'vknoeth9'"),
    ],
)  # fmt: skip
def test_bad_network_input_leaves_nothing(
    net_host: HostBed, hvk: Client, args: list[str], message: str
) -> None:
    before = [n.name for n in hvk.networks.list()]
    result = run_host_cli(net_host, "net", "create", "vktest-bad", "--kind", "isolated", *args)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert [n.name for n in hvk.networks.list()] == before


def test_taken_name_overlap_reservation_and_mac_errors(net_host: HostBed, hvk: Client) -> None:
    hb = net_host
    assert run_host_cli(hb, "net", "create", "vktest-a", "--kind", "isolated",
                        "--ipv4", "198.18.30.1/24").returncode == 0  # fmt: skip
    # state: stop, start (twice: refused), autostart off
    assert run_host_cli(hb, "net", "stop", "vktest-a").returncode == 0
    assert not hvk.networks.get("vktest-a").active
    assert run_host_cli(hb, "net", "start", "vktest-a").returncode == 0
    again = run_host_cli(hb, "net", "start", "vktest-a")
    assert again.returncode == 1 and "already running" in again.stderr
    assert run_host_cli(hb, "net", "autostart", "vktest-a", "--off").returncode == 0
    info = hvk.networks.get("vktest-a")
    assert info.active and not info.autostart
    taken = run_host_cli(hb, "net", "create", "vktest-a", "--kind", "isolated")
    assert taken.returncode == 1 and "already exists" in taken.stderr
    overlap = run_host_cli(hb, "net", "create", "vktest-b", "--kind", "isolated",
                           "--ipv4", "198.18.30.129/25")  # fmt: skip
    assert overlap.returncode == 1 and "overlaps 198.18.30.0/24" in overlap.stderr
    # the host's own link (198.18.0.0/24 on vkl0) is refused by libvirt, and nothing is left
    link = run_host_cli(hb, "net", "create", "vktest-c", "--kind", "nat",
                        "--ipv4", "198.18.0.200/24")  # fmt: skip
    assert link.returncode == 1 and "overlaps" in link.stderr, link.stderr
    assert not hvk.host.networks.exists("vktest-c")
    outside = run_host_cli(hb, "net", "reserve", "vktest-a", "--mac", "52:54:00:01:02:03",
                           "--ip", "198.18.31.5")  # fmt: skip
    assert outside.returncode == 1 and "outside the subnets" in outside.stderr
    bad_mac = run_host_cli(hb, "net", "reserve", "vktest-a", "--mac", "52:54:00:01:02",
                           "--ip", "198.18.30.5")  # fmt: skip
    assert bad_mac.returncode == 1 and "invalid MAC" in bad_mac.stderr
    assert run_host_cli(hb, "net", "reserve", "vktest-a", "--mac", "52:54:00:01:02:03",
                        "--ip", "198.18.30.5").returncode == 0  # fmt: skip
    dup = run_host_cli(hb, "net", "reserve", "vktest-a", "--mac", "52:54:00:01:02:04",
                       "--ip", "198.18.30.5")  # fmt: skip
    assert dup.returncode == 1 and "already reserved" in dup.stderr
    dns = run_host_cli(hb, "net", "dns-add", "vktest-a", "--ip", "198.18.30.9",
                       "--hostname", "db")  # fmt: skip
    assert dns.returncode == 0, dns.stderr
    shown = json.loads(run_host_cli(hb, "net", "show", "vktest-a", "--json").stdout)
    assert shown["dns_hosts"] == [{"ip": "198.18.30.9", "hostnames": ["db"]}]
    assert shown["reservations"] == [{"mac": "52:54:00:01:02:03", "ip": "198.18.30.5",
                                      "name": None}]  # fmt: skip
    # IPv6 beside IPv4, with DHCPv6: libvirt's dnsmasq serves both, the bridge has both
    v6 = run_host_cli(hb, "net", "create", "vktest-v6", "--kind", "isolated",
                      "--ipv4", "198.18.32.1/24", "--ipv6", "fd00:18::1/64",
                      "--dhcp6-start", "fd00:18::100", "--dhcp6-end", "fd00:18::1ff")  # fmt: skip
    assert v6.returncode == 0, v6.stderr
    info = hvk.networks.get("vktest-v6")
    assert info.active and info.ipv6 == "fd00:18::1/64" and info.bridge
    assert ("fd00:18::100", "fd00:18::1ff") in info.dhcp_ranges
    assert "fd00:18::1/64" in hb.host.run("ip", "-6", "addr", "show", "dev", info.bridge).stdout
    tiny(hb, hvk, "vktest-macs")
    bad_nic = run_host_cli(hb, "vm", "nic", "add", "vktest-macs", "--network", "vktest-a",
                           "--mac", "01:00:5e:00:00:01")  # fmt: skip
    assert bad_nic.returncode == 1 and "multicast" in bad_nic.stderr
    assert hvk.nics.list("vktest-macs") == []


def test_two_hosts_reach_each_other_over_tcp() -> None:
    with TestHosts(2, prefix="vktest") as hosts:
        a, b = hosts
        seen = a.run("virsh", "-c", b.tcp_uri, "hostname")
        assert seen.stdout.strip() == b.netns
        back = b.run("virsh", "-c", a.tcp_uri, "uri")
        assert back.stdout.strip() == a.tcp_uri
        # nothing of theirs is routed out: no default route in a test host
        assert "default" not in a.run("ip", "route").stdout


def test_bridged_and_macvtap_networks_and_the_neighbour_table(
    net_host: HostBed, hvk: Client, tmp_path: Path
) -> None:
    """A host bridge with its own DHCP server (busybox udhcpd, not libvirt's): a guest on a
    `bridge` network gets an address libvirt has no lease for, and `vm ip` finds it in the host's
    neighbour table once the host has talked to it. A `macvtap` network on a dummy interface
    (one end of a veth pair) gives the guest a NIC."""
    hb, host = net_host, net_host.host
    host.run("ip", "link", "add", "vkbr0", "type", "bridge")
    host.run("ip", "addr", "add", "198.18.13.1/24", "dev", "vkbr0")
    host.run("ip", "link", "set", "vkbr0", "up")
    host.run("ip", "link", "add", "vkdum0", "type", "veth", "peer", "name", "vkdum1")
    host.run("ip", "link", "set", "vkdum0", "up")
    host.run("ip", "link", "set", "vkdum1", "up")
    conf = tmp_path / "udhcpd.conf"
    conf.write_text(
        "start 198.18.13.100\nend 198.18.13.150\ninterface vkbr0\n"
        f"lease_file {tmp_path / 'leases'}\npidfile {tmp_path / 'udhcpd.pid'}\n"
        "option subnet 255.255.255.0\n"
    )
    (tmp_path / "leases").touch()
    dhcpd = subprocess.Popen(
        ["ip", "netns", "exec", host.netns, "busybox", "udhcpd", "-f", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        made = run_host_cli(hb, "net", "create", "vktest-br", "--kind", "bridge", "--bridge",
                            "vkbr0")  # fmt: skip
        assert made.returncode == 0, made.stderr
        made = run_host_cli(hb, "net", "create", "vktest-mv", "--kind", "macvtap", "--interface",
                            "vkdum0", "--mode", "vepa")  # fmt: skip
        assert made.returncode == 0, made.stderr
        shown = {n.name: n for n in hvk.networks.list()}
        assert (shown["vktest-br"].kind, shown["vktest-br"].bridge) == ("bridge", "vkbr0")
        assert (shown["vktest-mv"].kind, shown["vktest-mv"].interface) == ("macvtap", "vkdum0")
        name = "vktest-bridged"
        log = hb.log_dir / f"{name}-serial0.log"
        tiny(hb, hvk, name)
        mac = hvk.nics.add(name, network="vktest-br").mac
        hvk.nics.add(name, network="vktest-mv")
        hvk.vms.start(name)
        wait_for_log(log, f"{NET_MARKER} [eth0:up eth1:up]")
        address = guest_ip(wait_for_log(log, f"{IP_MARKER} eth0"), "eth0").split("/")[0]
        assert address.startswith("198.18.13.")
        assert hvk.networks.leases("vktest-br") == []  # libvirt served no lease here
        ping = host.run("busybox", "ping", "-c", "1", "-W", "5", address, check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        found = hvk.nics.ip(name)
        assert [(a.mac, a.ip, a.source) for a in found] == [(mac, address, "arp")]
    finally:
        dhcpd.terminate()
        dhcpd.wait(10)
        host.run("ip", "link", "del", "vkbr0", check=False)
        host.run("ip", "link", "del", "vkdum0", check=False)
