"""Test hosts: several libvirt "hosts" on one machine, each in its own network namespace.

A test host is a network namespace (``ip netns``) plus a private mount namespace with its own
libvirtd (:class:`PrivateLibvirtd`); tests reach it over ``qemu+unix://`` (its socket lies in a
directory the root namespace sees) and the hosts reach each other over ``qemu+tcp://`` on a link
between them. Every host has an interface ``vkl0`` on one shared segment (a bridge in a "switch"
namespace, joined by a veth pair per host), addressed from 198.18.0.0/24 (RFC 2544 benchmarking
space); nothing routes out of the namespaces, so guest traffic never reaches the machine's real
interfaces, and virtual networks with forwarding start only inside test hosts, never in the root
namespace. Everything is torn down by the object that made it.

Usage::

    with TestHosts(2, prefix="vktest") as hosts:
        a, b = hosts
        a.uri            # qemu+unix:///system?socket=...
        a.tcp_uri        # qemu+tcp://198.18.0.11/system (from another host)
        a.run("ip", "addr")  # a command inside the host's network namespace
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.testbed.libvirtd import PrivateLibvirtd

LINK_NET = "198.18.0"  # hosts are .11, .12, ...; the segment is /24


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class TestHost:
    __test__ = False  # not a pytest class

    def __init__(self, name: str, index: int, tag: str) -> None:
        self.name = name
        self.netns = f"{tag}-{name}"
        self.address = f"{LINK_NET}.{11 + index}"
        self.daemon: PrivateLibvirtd | None = None

    @property
    def uri(self) -> str:
        assert self.daemon is not None
        return self.daemon.uri

    @property
    def tcp_uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"

    @property
    def shared(self) -> Path:
        assert self.daemon is not None
        return self.daemon.shared

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host's network namespace."""
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv],
            check=check, capture_output=True, text=True, timeout=60,
        )  # fmt: skip


class TestHosts:
    """``count`` test hosts on one link. A context manager; also ``start()``/``close()``."""

    __test__ = False

    def __init__(self, count: int = 1, prefix: str = "vktest") -> None:
        self.prefix = prefix
        self.tag = f"{prefix}{secrets.token_hex(2)}"  # short: interface names have 15 chars
        self.switch = f"{self.tag}-sw"
        self.hosts = [TestHost(f"h{i + 1}", i, self.tag) for i in range(count)]
        self._made: list[str] = []  # namespaces to delete

    def __iter__(self) -> Iterator[TestHost]:
        return iter(self.hosts)

    def __getitem__(self, index: int) -> TestHost:
        return self.hosts[index]

    def start(self) -> TestHosts:
        prefix = self.prefix
        try:
            _ip("netns", "add", self.switch)
            self._made.append(self.switch)
            sw = ["netns", "exec", self.switch]
            _ip(*sw, "ip", "link", "add", "vksw", "type", "bridge")
            _ip(*sw, "ip", "link", "set", "vksw", "up")
            _ip(*sw, "ip", "link", "set", "lo", "up")
            for index, host in enumerate(self.hosts):
                _ip("netns", "add", host.netns)
                self._made.append(host.netns)
                inside, outside = f"{self.tag}i{index}", f"{self.tag}o{index}"
                _ip("link", "add", inside, "type", "veth", "peer", "name", outside)
                _ip("link", "set", inside, "netns", host.netns)
                _ip("link", "set", outside, "netns", self.switch)
                _ip(*sw, "ip", "link", "set", outside, "master", "vksw", "up")
                ns = ["netns", "exec", host.netns]
                _ip(*ns, "ip", "link", "set", "lo", "up")
                _ip(*ns, "ip", "link", "set", inside, "name", "vkl0")
                _ip(*ns, "ip", "addr", "add", f"{host.address}/24", "dev", "vkl0")
                _ip(*ns, "ip", "link", "set", "vkl0", "up")
                host.daemon = PrivateLibvirtd(
                    name=f"{self.tag}-{host.name}",
                    netns=host.netns,
                    listen_addr=host.address,
                    hostname=host.netns,
                    # stable per position: KVM verdicts cached for one are reused next time
                    host_uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{prefix}-{index}.test")),
                )
                host.daemon.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for host in self.hosts:
            if host.daemon is not None:
                with contextlib.suppress(Exception):
                    host.daemon.cleanup()
                host.daemon = None
        for netns in reversed(self._made):
            # deleting a namespace deletes its interfaces, and the veth peers with them
            subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
        self._made.clear()

    def __enter__(self) -> TestHosts:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
